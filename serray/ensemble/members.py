"""Ensemble members: logits of M trained models on the same pooled validation and test rows.

:class:`Members` holds them; :func:`members_from_predictions` builds them from a
predictions table (one member per run, configuration and seed).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Members", "members_from_predictions"]

_SPLITS = ("validation", "test")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")



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
    classes = [str(c) for c in classes]
    work = _member_table(df, classes)
    keyed = work.sort_values(["run", "config_id", "seed", "split", "fold_key", "utt_key"], kind="stable")
    member_order = [str(n) for n in keyed["member"].unique()]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows: dict[str, pd.DataFrame] = {}
    for split in _SPLITS:
        out[split], rows[split] = _pooled_split(keyed[keyed["split"] == split], split, member_order, len(classes))
    run_of = keyed.drop_duplicates("member").set_index("member")["run"]
    variant = [str(run_of[n]) for n in member_order]
    return Members(
        member_order, variant, classes, out["validation"][0], out["validation"][1], out["test"][0], out["test"][1],
        rows,
    )


def _member_table(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The checked predictions table with ``member`` name, class index ``y`` and str row keys."""
    missing = [c for c in _PRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"predictions table lacks columns {missing}; expected {list(_PRED_COLUMNS)}")
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
    return work


def _pooled_split(
    part: pd.DataFrame, split: str, member_order: list[str], n_classes: int
) -> tuple[tuple[np.ndarray, np.ndarray], pd.DataFrame]:
    """``((logits [M, N, C], labels [N]), rows)`` of one split, every member on the first one's rows."""
    present = set(part["member"])
    missing_members = [n for n in member_order if n not in present]
    if missing_members:
        raise ValueError(f"member {missing_members[0]!r} has no {split!r} rows")
    pos = part.groupby("member", sort=False).indices
    folds = part["fold_key"].to_numpy()
    utts = part["utt_key"].to_numpy()
    ys = part["y"].to_numpy()
    first = member_order[0]
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
    logits_split = flat.reshape(len(member_order), len(ref), n_classes)
    return (logits_split, ys[ref]), pd.DataFrame({"fold": part["fold"].to_numpy()[ref], "utt_id": utts[ref]})
