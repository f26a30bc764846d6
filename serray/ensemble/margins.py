"""Decision margins: per-member margins of one split, grouped by true class, and their pruning.

A subset's fused decision on a row is correct iff its summed margins have the right sign
(see :class:`Margins`); the walk in :mod:`serray.ensemble.walk` scores subsets from them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from serray.ensemble.fusion import FUSIONS, _softmax64
from serray.ensemble.members import Members, _check_choice

__all__ = ["Margins", "build_margins", "prune_margins"]


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


def _flip_mask(m: Margins) -> np.ndarray:
    """True for entries stored negated (c > j), see :class:`Margins`."""
    c = m.n_classes
    parts = []
    for j in range(c):
        n = int(m.n_rows[j])
        parts.append(np.repeat(np.arange(c - 1) >= j, n))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
