"""Members, late-fusion rules and the vectorised exhaustive n-choose-k ensemble search.

An ensemble *member* is one trained model (one seed of one configuration of one run)
with logits for the same validation and test rows as every other member. The search
scores every k-subset of the M members by the UA of its fused prediction (paper 003,
sec. 4.5: "combination of 30 trials taking k without repetition").

Fusion rules (``fusion=``):

* ``"logits"``: sum of the members' logits, then argmax (paper 003's late combination).
* ``"prob"``: mean of the members' softmax probabilities, then argmax. The argmax of
  the *sum* is used (same decision as the mean, without a division's rounding).
* ``"vote"``: majority vote of the members' argmax predictions. Ties in the vote are
  broken by the larger summed logit among the tied classes, then by the lower class
  index.

Every argmax breaks exact ties towards the lower class index (numpy's convention).

Selection modes (``selection=``):

* ``"validation"`` (default): subsets are ranked by UA on the pooled validation rows
  (every fold's validation rows concatenated); test UA/WA are reported beside it.
* ``"test-optimistic"``: subsets are ranked by test UA, as some papers do. The
  leaderboard then carries :data:`OPTIMISTIC_WARNING`.

How it is fast. For a subset S, the fused decision on a row with true class y is
correct iff for every other class c the summed margin ``sum_{m in S} (v_m[c] - v_m[y])``
is ``< 0`` (c < y) or ``<= 0`` (c > y), where v are logits or probabilities. The
margins are precomputed once per member, grouped by true class; a subset is then
scored by comparisons only: subsets are walked in lexicographic order, and all subsets
sharing their first k-1 members are compared against that prefix's (negated) partial
sum in one array operation. Rows whose outcome is the same for every k-subset (bounded
by the sums of the k largest/smallest member margins) are counted once and dropped.
Margins are float64 by default; sums of float32 logits are then exact, so results
equal a float64 brute force bit for bit.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 60)
    >>> logits = rng.normal(size=(5, 60, 3)).astype("float32")
    >>> logits[:, np.arange(60), y] += 1.0
    >>> m = Members.from_arrays(logits, y, logits[:, ::-1], y[::-1], classes=["a", "b", "c"])
    >>> board = exhaustive_search(m, [2, 3], top=2)
    >>> board[["k", "position"]].values.tolist()
    [[2, 1], [2, 2], [3, 1], [3, 2]]
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from serray.ensemble.combinatorics import MAX_VECTOR_RANK, n_choose_k, unrank, unrank_block
from serray.metrics import batched_ua, ua_from_counts

__all__ = [
    "FUSIONS",
    "SELECTIONS",
    "BACKENDS",
    "OPTIMISTIC_WARNING",
    "VALIDATION_NOTE",
    "Members",
    "members_from_predictions",
    "fused_predictions",
    "evaluate_subset",
    "exhaustive_search",
    "selection_note",
    "selection_split",
    "Margins",
    "build_margins",
    "prune_margins",
    "search_range",
    "merge_top",
    "build_leaderboard",
]

log = logging.getLogger(__name__)

FUSIONS: tuple[str, ...] = ("logits", "prob", "vote")
SELECTIONS: tuple[str, ...] = ("validation", "test-optimistic")
BACKENDS: tuple[str, ...] = ("numpy", "torch", "auto")

#: Note attached to every result selected on test data.
OPTIMISTIC_WARNING = (
    "OPTIMISTIC ESTIMATE: ensemble members were selected on the test data "
    "(selection='test-optimistic'), so the reported test UA/WA are optimistically biased "
    "and are not an unbiased estimate of performance on unseen data."
)
#: Note attached to results selected on validation data. It says what the selection saw, as
#: best.yaml does for a search: no test logits, but validation logits that are not fresh
#: (each member's early stopping already chose its epoch on them) and, under LOSO or
#: k-fold, come from speakers who are other folds' test speakers.
VALIDATION_NOTE = (
    "Ensemble members were selected on pooled validation data only (test logits not used). "
    "Not a nested estimate: each member's validation logits are the ones its early stopping "
    "already used, and under LOSO/k-fold a fold's validation speakers are other folds' test "
    "speakers, so the selection has seen every speaker's labels; the test UA/WA of the chosen "
    "subset may be somewhat optimistic."
)

_SPLITS = ("validation", "test")


def selection_note(selection: str) -> str:
    """The note a result selected with ``selection`` must carry."""
    _check_choice("selection", selection, SELECTIONS)
    return OPTIMISTIC_WARNING if selection == "test-optimistic" else VALIDATION_NOTE


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


# --------------------------------------------------------------------------- members


@dataclasses.dataclass(frozen=True)
class Members:
    """Logits of M ensemble members on the same pooled validation and test rows.

    Attributes:
        names: Member ids, ``"run/config_id/seed"``.
        variant: The run name of each member (e.g. vanilla / mtl / dann).
        classes: Class names in logit order.
        val_logits: float32 ``[M, Nv, C]``.
        y_val: int64 ``[Nv]`` class indices.
        test_logits: float32 ``[M, Nt, C]``.
        y_test: int64 ``[Nt]``.
        rows: Optional ``{"validation": frame, "test": frame}`` with columns ``fold`` and
            ``utt_id`` naming each pooled row (set by :func:`members_from_predictions`;
            a nested estimate needs it to keep a fold's test speakers out of selection).
    """

    names: list[str]
    variant: list[str]
    classes: list[str]
    val_logits: np.ndarray
    y_val: np.ndarray
    test_logits: np.ndarray
    y_test: np.ndarray
    rows: Mapping[str, pd.DataFrame] | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", [str(n) for n in self.names])
        object.__setattr__(self, "variant", [str(v) for v in self.variant])
        object.__setattr__(self, "classes", [str(c) for c in self.classes])
        c = len(self.classes)
        if c < 2:
            raise ValueError(f"need at least 2 classes, got {self.classes}")
        for split, lg, y in (("validation", self.val_logits, self.y_val), ("test", self.test_logits, self.y_test)):
            lg = np.ascontiguousarray(lg, dtype=np.float32)
            y = np.ascontiguousarray(y, dtype=np.int64)
            if lg.ndim != 3 or lg.shape[2] != c:
                raise ValueError(f"{split} logits must be [M, N, C={c}], got shape {lg.shape}")
            if y.ndim != 1 or y.shape[0] != lg.shape[1]:
                raise ValueError(f"{split} labels must be [N={lg.shape[1]}], got shape {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= c):
                raise ValueError(f"{split} labels must be class indices in [0, {c})")
            if not np.all(np.isfinite(lg)):
                raise ValueError(f"{split} logits contain NaN or inf")
            if split == "validation":
                object.__setattr__(self, "val_logits", lg)
                object.__setattr__(self, "y_val", y)
            else:
                object.__setattr__(self, "test_logits", lg)
                object.__setattr__(self, "y_test", y)
        m = self.val_logits.shape[0]
        if self.test_logits.shape[0] != m or len(self.names) != m or len(self.variant) != m:
            raise ValueError(
                f"inconsistent member count: {len(self.names)} names, {len(self.variant)} variants, "
                f"{m} validation and {self.test_logits.shape[0]} test logit sets"
            )
        if m < 1:
            raise ValueError("need at least one member")
        if len(set(self.names)) != m:
            dup = [n for n, k in Counter(self.names).items() if k > 1]
            raise ValueError(f"member names must be unique; duplicated: {dup[:5]}")
        if self.rows is not None:
            for split, n in (("validation", self.y_val.shape[0]), ("test", self.y_test.shape[0])):
                frame = self.rows.get(split)
                if frame is None or len(frame) != n or not {"fold", "utt_id"} <= set(frame.columns):
                    raise ValueError(f"rows[{split!r}] must be a frame of {n} rows with columns fold and utt_id")

    @classmethod
    def from_arrays(
        cls,
        val_logits: np.ndarray,
        y_val: np.ndarray,
        test_logits: np.ndarray,
        y_test: np.ndarray,
        classes: Sequence[str],
        names: Sequence[str] | None = None,
        variant: Sequence[str] | None = None,
    ) -> "Members":
        """Build members from arrays; default names ``m0, m1, ...`` and variant ``"run"``."""
        m = np.asarray(val_logits).shape[0]
        names = list(names) if names is not None else [f"m{i}" for i in range(m)]
        variant = list(variant) if variant is not None else ["run"] * m
        return cls(names, variant, list(classes), val_logits, y_val, test_logits, y_test)

    @property
    def n_members(self) -> int:
        """M."""
        return len(self.names)

    @property
    def n_classes(self) -> int:
        """C."""
        return len(self.classes)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [M, N, C], labels [N])`` of ``"validation"`` or ``"test"``."""
        _check_choice("split", split, _SPLITS)
        return (self.val_logits, self.y_val) if split == "validation" else (self.test_logits, self.y_test)

    def select(self, indices: Sequence[int]) -> "Members":
        """A new :class:`Members` with only the members at ``indices`` (in that order)."""
        idx = [int(i) for i in indices]
        return Members(
            [self.names[i] for i in idx],
            [self.variant[i] for i in idx],
            self.classes,
            self.val_logits[idx],
            self.y_val,
            self.test_logits[idx],
            self.y_test,
            self.rows,
        )


_PRED_COLUMNS = ("run", "config_id", "seed", "fold", "split", "utt_id", "label", "logits")


def members_from_predictions(df: pd.DataFrame, classes: Sequence[str]) -> Members:
    """Build :class:`Members` from a predictions table (the contract in docs/design.md).

    Each (run, config_id, seed) is one member, named ``"run/config_id/seed"``. Rows are
    aligned across members by ``(fold, split, utt_id)``; the pooled validation set is
    every fold's validation rows concatenated (ordered by fold, then utt_id), likewise
    for test.

    Args:
        df: Columns ``run, config_id, seed, fold, split, utt_id, label, logits`` (logits
            a list of floats in the order of ``classes``; ``pred`` is ignored).
        classes: Class names in logit order.

    Returns:
        Members ordered by (run, config_id, seed).

    Raises:
        ValueError: Missing columns, unknown labels, logits of the wrong length, duplicate
            rows, members that do not cover the same rows, or labels that differ between
            members for the same row.
    """
    missing = [c for c in _PRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"predictions table lacks columns {missing}; expected {list(_PRED_COLUMNS)}")
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be >= 2 unique names, got {classes}")
    if df.empty:
        raise ValueError("predictions table is empty")
    bad_split = sorted(set(df["split"].astype(str)) - set(_SPLITS))
    if bad_split:
        raise ValueError(f"split values must be 'validation' or 'test', found {bad_split}")
    lut = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(df["label"].astype(str)) - set(lut))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in classes {classes}")

    work = df[list(_PRED_COLUMNS)].copy()
    work["member"] = work["run"].astype(str) + "/" + work["config_id"].astype(str) + "/" + work["seed"].astype(str)
    lengths = work["logits"].map(len).to_numpy()
    if np.any(lengths != len(classes)):
        bad = work.loc[lengths != len(classes), "member"].iloc[0]
        raise ValueError(
            f"member {bad!r} has logits of length {sorted(set(lengths.tolist()) - {len(classes)})}, "
            f"expected {len(classes)} (one per class of {classes})"
        )
    work["y"] = work["label"].astype(str).map(lut).astype(np.int64)
    work["fold_key"] = work["fold"].astype(str)
    work["utt_key"] = work["utt_id"].astype(str)
    dup = work.duplicated(["member", "fold_key", "split", "utt_key"])
    if dup.any():
        r = work.loc[dup].iloc[0]
        raise ValueError(
            f"member {r['member']!r} has duplicate rows for "
            f"(fold={r['fold']!r}, split={r['split']!r}, utt_id={r['utt_id']!r})"
        )
    keyed = work.sort_values(["run", "config_id", "seed", "split", "fold_key", "utt_key"], kind="stable")
    member_order = [str(n) for n in keyed["member"].unique()]
    first = member_order[0]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows: dict[str, pd.DataFrame] = {}
    for split in _SPLITS:
        part = keyed[keyed["split"] == split]
        present = set(part["member"])
        missing_members = [n for n in member_order if n not in present]
        if missing_members:
            raise ValueError(f"member {missing_members[0]!r} has no {split!r} rows")
        pos = part.groupby("member", sort=False).indices
        folds = part["fold_key"].to_numpy()
        utts = part["utt_key"].to_numpy()
        ys = part["y"].to_numpy()
        ref = pos[first]
        for name in member_order[1:]:
            idx = pos[name]
            same = len(idx) == len(ref)
            same = same and np.array_equal(folds[idx], folds[ref]) and np.array_equal(utts[idx], utts[ref])
            if not same:
                ref_set = set(zip(folds[ref], utts[ref]))
                have = set(zip(folds[idx], utts[idx]))
                miss, extra = sorted(ref_set - have), sorted(have - ref_set)
                raise ValueError(
                    f"member {name!r} does not cover the same {split} rows as member {first!r}: "
                    f"{len(miss)} missing (e.g. {miss[:3]}), {len(extra)} extra (e.g. {extra[:3]}); "
                    "every member must have predictions for every (fold, split, utt_id)"
                )
            if not np.array_equal(ys[idx], ys[ref]):
                raise ValueError(
                    f"member {name!r} has different labels than member {first!r} for the same {split} rows"
                )
        order = np.concatenate([pos[name] for name in member_order])
        flat = np.concatenate([np.asarray(v, dtype=np.float32) for v in part["logits"].to_numpy()[order]])
        logits_split = flat.reshape(len(member_order), len(ref), len(classes))
        out[split] = (logits_split, ys[ref])
        rows[split] = pd.DataFrame({"fold": part["fold"].to_numpy()[ref], "utt_id": utts[ref]})
    run_of = keyed.drop_duplicates("member").set_index("member")["run"]
    variant = [str(run_of[n]) for n in member_order]
    return Members(
        member_order, variant, classes, out["validation"][0], out["validation"][1], out["test"][0], out["test"][1],
        rows,
    )


# --------------------------------------------------------------------------- reference fusion


def _softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _vote_argmax(votes: np.ndarray, summed: np.ndarray) -> np.ndarray:
    """Class with most votes; ties by larger summed logit, then lower index."""
    best = votes.max(axis=-1, keepdims=True)
    return np.where(votes == best, summed, -np.inf).argmax(axis=-1)


def fused_predictions(members: Members, subset: Sequence[int], split: str, fusion: str = "logits") -> np.ndarray:
    """Fused class predictions of a subset (repeats allowed: a repeated member counts twice).

    This is the plain float64 reference implementation; the search engine's vectorised
    evaluator reproduces it.

    Args:
        members: The members.
        subset: Member indices.
        split: ``"validation"`` or ``"test"``.
        fusion: ``"logits"``, ``"prob"`` or ``"vote"``.

    Returns:
        int64 predictions ``[N]``.
    """
    _check_choice("fusion", fusion, FUSIONS)
    idx = [int(i) for i in subset]
    if not idx:
        raise ValueError("subset is empty")
    if min(idx) < 0 or max(idx) >= members.n_members:
        raise ValueError(f"subset indices must lie in [0, {members.n_members})")
    logits, _ = members.split(split)
    sel = logits[idx]
    if fusion == "logits":
        return sel.astype(np.float64).sum(axis=0).argmax(axis=-1)
    if fusion == "prob":
        return _softmax64(sel).sum(axis=0).argmax(axis=-1)
    votes = np.zeros(sel.shape[1:], dtype=np.int64)
    rows = np.arange(sel.shape[1])
    for m in range(sel.shape[0]):
        np.add.at(votes, (rows, sel[m].argmax(axis=-1)), 1)
    return _vote_argmax(votes, sel.astype(np.float64).sum(axis=0))


def evaluate_subset(members: Members, subset: Sequence[int], fusion: str = "logits") -> dict[str, float]:
    """UA and WA of a subset's fused prediction on validation and test.

    Returns:
        ``{"val_ua", "val_wa", "test_ua", "test_wa"}``.
    """
    out = {}
    for split, key in (("validation", "val"), ("test", "test")):
        _, y = members.split(split)
        pred = fused_predictions(members, subset, split, fusion)
        out[f"{key}_ua"] = float(batched_ua(y, pred[None, :], members.n_classes)[0])
        out[f"{key}_wa"] = float(np.mean(pred == y))
    return out


# --------------------------------------------------------------------------- margins


@dataclasses.dataclass(frozen=True)
class Margins:
    """Per-member decision margins on one split, grouped by true class.

    Entry layout: class block j (rows with true class j, ``n_rows[j]`` of them) holds
    ``C-1`` segments, one per other class c in increasing order, each ``n_rows[j]`` long.
    For c < j the stored value is ``v[c] - v[j]`` and the entry is satisfied when the
    subset sum is ``< 0``; for c > j the stored value is negated (``v[j] - v[c]``) and
    the entry is satisfied when the subset sum is *not* ``< 0`` (i.e. the original sum
    ``<= 0``). For ``vote`` the primary margins are vote differences (never negated,
    always strict) and ``secondary`` holds the logit margins with the layout above.
    """

    fusion: str
    primary: np.ndarray  # [M, L]
    secondary: np.ndarray | None  # [M, L] (vote only)
    n_rows: np.ndarray  # [C] rows per class kept in the layout
    support: np.ndarray  # [C] rows per class in the split
    base_correct: np.ndarray  # [C] correct rows that were pruned (same for every subset)

    @property
    def n_members(self) -> int:
        return self.primary.shape[0]

    @property
    def n_classes(self) -> int:
        return self.support.shape[0]

    @property
    def width(self) -> int:
        return self.primary.shape[1]


def build_margins(members: Members, fusion: str, split: str, dtype: str = "float64") -> Margins:
    """Precompute member margins of ``split`` for ``fusion``."""
    _check_choice("fusion", fusion, FUSIONS)
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    logits, y = members.split(split)
    c = members.n_classes
    values = _softmax64(logits) if fusion == "prob" else logits.astype(np.float64)
    if fusion == "vote":
        votes = np.zeros(logits.shape, dtype=np.float64)
        np.put_along_axis(votes, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
    prim, sec = [], []
    n_rows = np.bincount(y, minlength=c)
    for j in range(c):
        rows = np.flatnonzero(y == j)
        for cc in range(c):
            if cc == j:
                continue
            sign = 1.0 if cc < j else -1.0
            d = values[:, rows, cc] - values[:, rows, j]
            if fusion == "vote":
                prim.append(votes[:, rows, cc] - votes[:, rows, j])
                sec.append(sign * d)
            else:
                prim.append(sign * d)
    primary = np.ascontiguousarray(np.concatenate(prim, axis=1), dtype=dtype)
    secondary = np.ascontiguousarray(np.concatenate(sec, axis=1), dtype=dtype) if sec else None
    return Margins(fusion, primary, secondary, n_rows, n_rows.copy(), np.zeros(c, dtype=np.int64))


def prune_margins(m: Margins, k: int) -> Margins:
    """Drop rows whose outcome is the same for every k-subset; count the correct ones.

    Uses the sums of the k largest and k smallest member margins of every entry, with a
    safety margin for float rounding, so the decision is exact.
    """
    mm, c = m.n_members, m.n_classes
    if not 1 <= k <= mm:
        raise ValueError(f"k must lie in [1, {mm}], got {k}")
    srt = np.sort(m.primary, axis=0)
    hi = srt[mm - k :].sum(axis=0)
    lo = srt[:k].sum(axis=0)
    tol = 4.0 * k * k * float(np.abs(m.primary).max(initial=0.0)) * float(np.finfo(m.primary.dtype).eps)
    lt_always = hi < -tol  # sum < 0 for every subset
    ge_always = lo > tol  # sum >= 0 for every subset (strictly > 0 for vote margins)
    keep_idx, n_rows, base = [], np.zeros(c, dtype=np.int64), m.base_correct.copy()
    off = 0
    for j in range(c):
        n = int(m.n_rows[j])
        seg = slice(off, off + (c - 1) * n)
        lt = lt_always[seg].reshape(c - 1, n)
        ge = ge_always[seg].reshape(c - 1, n)
        if m.fusion == "vote":
            ok_always = lt.all(axis=0)  # every other class strictly fewer votes
            bad_always = ge.any(axis=0)  # some class strictly more votes
        else:
            # entries c < j need sum < 0; entries c > j are negated and need sum >= 0
            ok_always = lt[:j].all(axis=0) & ge[j:].all(axis=0)
            bad_always = ge[:j].any(axis=0) | lt[j:].any(axis=0)
        undecided = ~ok_always & ~bad_always
        base[j] += int(ok_always.sum())
        n_rows[j] = int(undecided.sum())
        cols = np.flatnonzero(undecided)
        keep_idx.append(off + (np.arange(c - 1)[:, None] * n + cols[None, :]).ravel())
        off += (c - 1) * n
    keep = np.concatenate(keep_idx) if keep_idx else np.zeros(0, dtype=np.int64)
    prim = np.ascontiguousarray(m.primary[:, keep])
    sec = np.ascontiguousarray(m.secondary[:, keep]) if m.secondary is not None else None
    return Margins(m.fusion, prim, sec, n_rows, m.support, base)


# --------------------------------------------------------------------------- block scoring


def _count_numpy(ok: np.ndarray, m: Margins, entry_level: bool) -> np.ndarray:
    """Correct rows per class ``[B, C]`` from entry booleans ``[B, L]``.

    ``entry_level``: ``ok`` already says "entry satisfied" (vote); otherwise it holds the
    raw ``sum < 0`` test and entries c > j must be False.
    """
    b, c = ok.shape[0], m.n_classes
    counts = np.zeros((b, c), dtype=np.int64)
    off = 0
    for j in range(c):
        n = int(m.n_rows[j])
        if n == 0:
            continue
        v = ok[:, off : off + (c - 1) * n].reshape(b, c - 1, n)
        off += (c - 1) * n
        if entry_level:
            good = np.logical_and.reduce(v, axis=1)
        elif j == 0:
            good = ~np.logical_or.reduce(v, axis=1)
        elif j == c - 1:
            good = np.logical_and.reduce(v, axis=1)
        else:
            good = np.logical_and.reduce(v[:, :j], axis=1)
            good &= ~np.logical_or.reduce(v[:, j:], axis=1)
        counts[:, j] = np.count_nonzero(good, axis=1)
    return counts


class _TopM:
    """Top-m (score, rank) pairs: higher score first, then lower rank."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.scores = np.zeros(0, dtype=np.float64)
        self.ranks = np.zeros(0, dtype=np.int64)

    def push(self, scores: np.ndarray, ranks: np.ndarray) -> None:
        if self.scores.shape[0] >= self.m:
            # a new candidate must beat the current m-th strictly unless its rank is lower
            worst_s, worst_r = self.scores[-1], self.ranks[-1]
            keep = (scores > worst_s) | ((scores == worst_s) & (ranks < worst_r))
            if not keep.any():
                return
            scores, ranks = scores[keep], ranks[keep]
        s = np.concatenate([self.scores, scores])
        r = np.concatenate([self.ranks, ranks])
        order = np.lexsort((r, -s))[: self.m]
        self.scores, self.ranks = s[order], r[order]


def merge_top(parts: Iterable[tuple[np.ndarray, np.ndarray]], m: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge several top lists of one k deterministically (score desc, rank asc)."""
    top = _TopM(m)
    for s, r in parts:
        top.push(np.asarray(s, dtype=np.float64), np.asarray(r, dtype=np.int64))
    return top.scores, top.ranks


def _walk_numpy(m: Margins, k: int, start: int, stop: int, top: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Score subsets of rank ``[start, stop)`` by walking them in lexicographic order.

    All subsets that share their first k-1 members are tested against the prefix's
    negated partial sum in one comparison over a contiguous slice of the margin matrix;
    ``batch`` subsets are then counted per class at once.
    """
    mm, width = m.n_members, m.width
    vote = m.fusion == "vote"
    prim, sec = m.primary, m.secondary
    dtype = prim.dtype
    best = _TopM(top)
    ok = np.empty((batch, width), dtype=bool)
    if vote:
        eq = np.empty((batch, width), dtype=bool)
        sraw = np.empty((batch, width), dtype=bool)
        flip = _flip_mask(m)
    # negated prefix sums: neg[d] = -(sum of the first d+1 members of the prefix)
    depth = k - 1
    negp = np.zeros((max(depth, 1), width), dtype=dtype)
    negs = np.zeros((max(depth, 1), width), dtype=dtype) if vote else None
    zero = np.zeros(width, dtype=dtype)
    combo = list(unrank(start, mm, k))
    r, fill, block_start = start, 0, start

    def rebuild(from_pos: int) -> None:
        for d in range(from_pos, depth):
            prevp = negp[d - 1] if d > 0 else zero
            np.subtract(prevp, prim[combo[d]], out=negp[d])
            if vote:
                prevs = negs[d - 1] if d > 0 else zero
                np.subtract(prevs, sec[combo[d]], out=negs[d])

    def flush() -> None:
        nonlocal fill, block_start
        if fill == 0:
            return
        counts = _count_numpy(ok[:fill], m, entry_level=vote)
        scores = ua_from_counts(counts + m.base_correct, m.support)
        best.push(np.atleast_1d(scores), np.arange(block_start, block_start + fill, dtype=np.int64))
        block_start += fill
        fill = 0

    rebuild(0)
    while r < stop:
        tp = negp[depth - 1] if depth > 0 else zero
        q0 = combo[-1]
        q_end = min(mm, q0 + (stop - r))
        q = q0
        while q < q_end:
            n = min(q_end - q, batch - fill)
            out = ok[fill : fill + n]
            np.less(prim[q : q + n], tp, out=out)
            if vote:
                ts = negs[depth - 1] if depth > 0 else zero
                np.equal(prim[q : q + n], tp, out=eq[fill : fill + n])
                np.less(sec[q : q + n], ts, out=sraw[fill : fill + n])
                np.logical_xor(sraw[fill : fill + n], flip, out=sraw[fill : fill + n])
                np.logical_and(eq[fill : fill + n], sraw[fill : fill + n], out=eq[fill : fill + n])
                np.logical_or(out, eq[fill : fill + n], out=out)
            fill += n
            q += n
            if fill == batch:
                flush()
        r += q_end - q0
        if r >= stop:
            break
        # next prefix: rightmost prefix position that can still move
        i = depth - 1
        while i >= 0 and combo[i] == mm - k + i:
            i -= 1
        if i < 0:
            break
        combo[i] += 1
        for j in range(i + 1, k):
            combo[j] = combo[j - 1] + 1
        rebuild(i)
    flush()
    return best.scores, best.ranks


def _flip_mask(m: Margins) -> np.ndarray:
    """True for entries stored negated (c > j), see :class:`Margins`."""
    c = m.n_classes
    parts = []
    for j in range(c):
        n = int(m.n_rows[j])
        parts.append(np.repeat(np.arange(c - 1) >= j, n))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _walk_torch(
    m: Margins, k: int, start: int, stop: int, top: int, batch: int, device: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Block evaluator for torch (CPU or GPU): gathers prefix sums for ``batch`` subsets.

    Produces the same sums in the same order as :func:`_walk_numpy`, hence identical
    scores.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mm, c = m.n_members, m.n_classes
    vote = m.fusion == "vote"
    prim = torch.from_numpy(m.primary).to(dev)
    sec = torch.from_numpy(m.secondary).to(dev) if vote else None
    flip = torch.from_numpy(_flip_mask(m)).to(dev)
    n_rows = [int(n) for n in m.n_rows]
    best = _TopM(top)
    for b0 in range(start, stop, batch):
        cb = unrank_block(b0, min(batch, stop - b0), mm, k)
        bsz = cb.shape[0]
        negp = torch.zeros((1, m.width), dtype=prim.dtype, device=dev)
        negs = torch.zeros((1, m.width), dtype=prim.dtype, device=dev) if vote else None
        parent = np.zeros(bsz, dtype=np.int64)  # index into the previous level's rows, per subset
        for d in range(k - 1):
            change = np.ones(bsz, dtype=bool)
            change[1:] = np.any(cb[1:, : d + 1] != cb[:-1, : d + 1], axis=1)
            uniq = np.flatnonzero(change)
            cols = torch.from_numpy(cb[uniq, d]).to(dev)
            par = torch.from_numpy(parent[uniq]).to(dev)
            negp = negp.index_select(0, par) - prim.index_select(0, cols)
            if vote:
                negs = negs.index_select(0, par) - sec.index_select(0, cols)
            parent = np.cumsum(change) - 1
        par = torch.from_numpy(parent).to(dev)
        last = torch.from_numpy(cb[:, k - 1]).to(dev)
        pl = prim.index_select(0, last)
        tp = negp.index_select(0, par)
        ok = pl < tp
        if vote:
            s_ok = (sec.index_select(0, last) < negs.index_select(0, par)) ^ flip
            ok = ok | ((pl == tp) & s_ok)
        counts = torch.zeros((bsz, c), dtype=torch.int64, device=dev)
        off = 0
        for j in range(c):
            n = n_rows[j]
            if n == 0:
                continue
            v = ok[:, off : off + (c - 1) * n].reshape(bsz, c - 1, n)
            off += (c - 1) * n
            if vote:
                good = v.all(dim=1)
            else:
                good = torch.ones((bsz, n), dtype=torch.bool, device=dev)
                if j > 0:
                    good &= v[:, :j].all(dim=1)
                if j < c - 1:
                    good &= ~v[:, j:].any(dim=1)
            counts[:, j] = good.sum(dim=1)
        counts_np = counts.cpu().numpy()
        scores = ua_from_counts(counts_np + m.base_correct, m.support)
        best.push(np.atleast_1d(scores), np.arange(b0, b0 + bsz, dtype=np.int64))
    return best.scores, best.ranks


def _resolve_backend(backend: str, device: str | None) -> str:
    _check_choice("backend", backend, BACKENDS)
    if backend != "auto":
        return backend
    if device is not None and str(device).startswith("cuda"):
        return "torch"
    try:
        import torch

        return "torch" if torch.cuda.is_available() else "numpy"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "numpy"


def _default_batch(backend: str, width: int, device: str | None) -> int:
    width = max(width, 1)
    if backend == "torch" and (device is None or str(device).startswith("cuda")):
        import torch

        if device is not None or torch.cuda.is_available():
            return int(max(1024, min(65536, (256 << 20) // (width * 12))))
    return int(max(16, min(4096, (1 << 20) // width)))


def search_range(
    margins: Margins,
    k: int,
    start: int,
    stop: int,
    top: int,
    backend: str = "numpy",
    batch: int | None = None,
    device: str | None = None,
    pruned: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Best ``top`` subsets of size ``k`` with ranks in ``[start, stop)``.

    Internal building block shared by :func:`exhaustive_search` and the Ray runner.

    Args:
        margins: From :func:`build_margins`, or already passed through
            :func:`prune_margins` for this k (then ``pruned=True``).

    Returns:
        ``(scores, ranks, n_evaluated)``.
    """
    total = n_choose_k(margins.n_members, k)
    if not 0 <= start <= stop <= total:
        raise ValueError(f"rank range [{start}, {stop}) must lie inside [0, C({margins.n_members}, {k})={total})")
    if start == stop:
        return np.zeros(0), np.zeros(0, dtype=np.int64), 0
    if not pruned:
        margins = prune_margins(margins, k)
    backend = _resolve_backend(backend, device)
    if batch is None:
        batch = _default_batch(backend, margins.width, device)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if backend == "torch":
        scores, ranks = _walk_torch(margins, k, start, stop, top, batch, device)
    else:
        scores, ranks = _walk_numpy(margins, k, start, stop, top, batch)
    return scores, ranks, stop - start


# --------------------------------------------------------------------------- public search


def _check_search_args(members: Members, k_values: Iterable[int], fusion: str, selection: str, top: int) -> list[int]:
    _check_choice("fusion", fusion, FUSIONS)
    _check_choice("selection", selection, SELECTIONS)
    if not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise ValueError("k_values is empty")
    bad = [k for k in ks if not 1 <= k <= members.n_members]
    if bad:
        raise ValueError(f"k values {bad} outside [1, {members.n_members}] (the number of members)")
    for k in ks:
        if n_choose_k(members.n_members, k) > MAX_VECTOR_RANK:
            raise ValueError(f"C({members.n_members}, {k}) is too large to enumerate")
    return ks


def selection_split(selection: str) -> str:
    """The split a selection mode scores subsets on."""
    _check_choice("selection", selection, SELECTIONS)
    return "test" if selection == "test-optimistic" else "validation"


def build_leaderboard(
    members: Members,
    per_k: dict[int, tuple[np.ndarray, np.ndarray]],
    fusion: str,
    selection: str,
) -> pd.DataFrame:
    """Leaderboard frame from per-k top lists of (score, rank).

    Columns: ``k, position, rank, indices, members, composition, score, val_ua, val_wa,
    test_ua, test_wa, fusion, selection``; ``attrs["note"]`` holds
    :func:`selection_note`. UA/WA columns are recomputed with the float64 reference
    fusion (:func:`evaluate_subset`).
    """
    rows = []
    for k in sorted(per_k):
        scores, ranks = per_k[k]
        for pos, (s, r) in enumerate(zip(scores.tolist(), ranks.tolist()), start=1):
            idx = unrank(int(r), members.n_members, k)
            ev = evaluate_subset(members, idx, fusion)
            comp = Counter(members.variant[i] for i in idx)
            rows.append(
                {
                    "k": k,
                    "position": pos,
                    "rank": int(r),
                    "indices": list(idx),
                    "members": [members.names[i] for i in idx],
                    "composition": ", ".join(f"{v} x{n}" for v, n in sorted(comp.items())),
                    "score": float(s),
                    **ev,
                    "fusion": fusion,
                    "selection": selection,
                }
            )
    cols = [
        "k", "position", "rank", "indices", "members", "composition", "score",
        "val_ua", "val_wa", "test_ua", "test_wa", "fusion", "selection",
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["note"] = selection_note(selection)
    df.attrs["selection"] = selection
    df.attrs["fusion"] = fusion
    return df


def exhaustive_search(
    members: Members,
    k_values: Iterable[int],
    fusion: str = "logits",
    selection: str = "validation",
    top: int = 10,
    backend: str = "auto",
    rank_range: tuple[int, int] | None = None,
    batch: int | None = None,
    dtype: str = "float64",
    device: str | None = None,
) -> pd.DataFrame:
    """Score every k-subset of the members, in this process, and keep the best per k.

    Ordering and ties: within each k, subsets are ordered by selection score (higher
    first); equal scores are ordered by the lexicographically smaller sorted member-index
    tuple (i.e. lower combinatorial rank). Across k the frame is ordered by k, so an
    overall ranking sorted by ``(-score, k, rank)`` puts smaller ensembles first on ties.

    Args:
        members: Ensemble members.
        k_values: Subset sizes to search, each in ``[1, M]``.
        fusion: ``"logits"`` (sum of logits), ``"prob"`` (mean softmax) or ``"vote"``.
        selection: ``"validation"`` (pooled validation UA) or ``"test-optimistic"``
            (test UA; the result carries :data:`OPTIMISTIC_WARNING`).
        top: Subsets kept per k.
        backend: ``"numpy"`` (CPU), ``"torch"`` (CPU or GPU) or ``"auto"`` (torch when
            CUDA is available, else numpy).
        rank_range: Optional ``(start, stop)`` restricting every k to ranks in
            ``[start, stop)`` (clipped to ``C(M, k)``); default all subsets.
        batch: Subsets scored per array operation (bounds memory to about
            ``batch x (C-1) x N`` bytes); default sized to the cache (numpy) or GPU.
        dtype: ``"float64"`` (exact, default) or ``"float32"`` (faster; near-ties may
            differ from a float64 brute force).
        device: Torch device (e.g. ``"cuda:0"``); default CUDA when available.

    Returns:
        Leaderboard (see :func:`build_leaderboard`) with the top ``top`` subsets of each k.

    Raises:
        ValueError: Unknown fusion/selection/backend, k outside ``[1, M]``, bad range.
    """
    ks = _check_search_args(members, k_values, fusion, selection, top)
    split = selection_split(selection)
    margins = build_margins(members, fusion, split, dtype)
    per_k = {}
    for k in ks:
        total = n_choose_k(members.n_members, k)
        lo, hi = (0, total) if rank_range is None else (int(rank_range[0]), int(rank_range[1]))
        if lo < 0 or hi < lo:
            raise ValueError(f"rank_range must be (start, stop) with 0 <= start <= stop, got {rank_range}")
        lo, hi = min(lo, total), min(hi, total)
        t0 = time.perf_counter()
        scores, ranks, n = search_range(margins, k, lo, hi, top, backend, batch, device)
        dt = time.perf_counter() - t0
        log.info("k=%d: %d subsets in %.2f s (%.0f subsets/s)", k, n, dt, n / dt if dt > 0 else float("inf"))
        per_k[k] = (scores, ranks)
    return build_leaderboard(members, per_k, fusion, selection)
