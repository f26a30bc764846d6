"""Combinatorial number system: rank, unrank and enumerate k-subsets of ``range(n)``.

Subsets are sorted index tuples ordered lexicographically, which is the order of
``itertools.combinations(range(n), k)``: rank 0 is ``(0, 1, ..., k-1)`` and rank
``C(n, k) - 1`` is ``(n-k, ..., n-1)``. The rank space ``[0, C(n, k))`` is what the
distributed ensemble search splits into ranges, one per Ray task.

The lexicographic rank of ``c_0 < ... < c_{k-1}`` is
``C(n, k) - 1 - sum_i C(n - 1 - c_i, k - i)``: mapping each index to ``n - 1 - c_i``
turns lexicographic order into reverse co-lexicographic order, whose rank is the
classical combinadic ``sum_i C(d_i, k - i)``.

Example:
    >>> rank((0, 2, 3), 5)
    3
    >>> unrank(3, 5, 3)
    (0, 2, 3)
    >>> unrank_block(2, 3, 5, 3).tolist()
    [[0, 1, 4], [0, 2, 3], [0, 2, 4]]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "n_choose_k",
    "rank",
    "unrank",
    "next_combination",
    "unrank_block",
    "rank_block",
    "split_range",
    "MAX_VECTOR_RANK",
]

#: Largest number of subsets the vectorised (int64) functions handle.
MAX_VECTOR_RANK = 2**62


def n_choose_k(n: int, k: int) -> int:
    """Binomial coefficient ``C(n, k)`` (0 when ``k < 0`` or ``k > n``).

    Example:
        >>> n_choose_k(30, 9)
        14307150
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k < 0 or k > n:
        return 0
    return math.comb(n, k)


def _check_subset(subset: Sequence[int], n: int) -> tuple[int, ...]:
    c = tuple(int(i) for i in subset)
    if any(b <= a for a, b in zip(c, c[1:])):
        raise ValueError(f"subset must be strictly increasing, got {c}")
    if c and (c[0] < 0 or c[-1] >= n):
        raise ValueError(f"subset indices must lie in [0, {n}), got {c}")
    return c


def rank(subset: Sequence[int], n: int) -> int:
    """Lexicographic rank of a strictly increasing index tuple among all its-size subsets.

    Args:
        subset: Strictly increasing indices in ``[0, n)``.
        n: Size of the ground set.

    Returns:
        Rank in ``[0, C(n, len(subset)))`` (a Python int, exact for any size).
    """
    c = _check_subset(subset, n)
    k = len(c)
    total = n_choose_k(n, k)
    return total - 1 - sum(n_choose_k(n - 1 - ci, k - i) for i, ci in enumerate(c))


def unrank(r: int, n: int, k: int) -> tuple[int, ...]:
    """The subset of lexicographic rank ``r`` (inverse of :func:`rank`).

    Args:
        r: Rank in ``[0, C(n, k))``.
        n: Size of the ground set.
        k: Subset size, ``0 <= k <= n``.

    Returns:
        Strictly increasing index tuple of length ``k``.
    """
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n={n}], got {k}")
    total = n_choose_k(n, k)
    if not 0 <= r < total:
        raise ValueError(f"rank must lie in [0, C({n}, {k})={total}), got {r}")
    m = total - 1 - r
    out = []
    d_hi = n  # d values are strictly decreasing
    for i in range(k):
        j = k - i
        # largest d < d_hi with C(d, j) <= m
        lo, hi = j - 1, d_hi - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if n_choose_k(mid, j) <= m:
                lo = mid
            else:
                hi = mid - 1
        m -= n_choose_k(lo, j)
        out.append(n - 1 - lo)
        d_hi = lo
    return tuple(out)


def next_combination(subset: Sequence[int], n: int) -> tuple[int, ...] | None:
    """The subset following ``subset`` in lexicographic order, or None after the last.

    Example:
        >>> next_combination((0, 1, 4), 5)
        (0, 2, 3)
        >>> next_combination((2, 3, 4), 5) is None
        True
    """
    c = list(_check_subset(subset, n))
    k = len(c)
    i = k - 1
    while i >= 0 and c[i] == n - k + i:
        i -= 1
    if i < 0:
        return None
    c[i] += 1
    for j in range(i + 1, k):
        c[j] = c[j - 1] + 1
    return tuple(c)


def _binom_table(n: int, k: int) -> np.ndarray:
    """``T[j, d] = C(d, j)`` for ``j <= k``, ``d < n`` as int64."""
    t = np.zeros((k + 1, max(n, 1)), dtype=np.int64)
    for j in range(k + 1):
        for d in range(n):
            t[j, d] = math.comb(d, j)
    return t


def _check_vector(n: int, k: int) -> int:
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n={n}], got {k}")
    total = n_choose_k(n, k)
    if total > MAX_VECTOR_RANK:
        raise ValueError(
            f"C({n}, {k}) = {total} exceeds the int64 range of the vectorised enumerator; "
            "use fewer members or a smaller k"
        )
    return total


def unrank_block(start: int, count: int, n: int, k: int) -> np.ndarray:
    """``count`` consecutive subsets starting at rank ``start``, vectorised.

    Args:
        start: First rank, ``0 <= start``.
        count: Number of subsets; truncated at ``C(n, k)``.
        n: Size of the ground set.
        k: Subset size.

    Returns:
        int64 array ``[count, k]``, rows in lexicographic order.
    """
    total = _check_vector(n, k)
    if start < 0 or count < 0:
        raise ValueError(f"start and count must be >= 0, got start={start}, count={count}")
    stop = min(total, start + count)
    ranks = np.arange(start, max(start, stop), dtype=np.int64)
    if k == 0:
        return np.zeros((ranks.shape[0], 0), dtype=np.int64)
    table = _binom_table(n, k)
    m = (total - 1) - ranks
    out = np.empty((ranks.shape[0], k), dtype=np.int64)
    for i in range(k):
        j = k - i
        # largest d with C(d, j) <= m; C(., j) is non-decreasing in d
        d = np.searchsorted(table[j], m, side="right") - 1
        m = m - table[j][d]
        out[:, i] = n - 1 - d
    return out


def rank_block(subsets: np.ndarray, n: int) -> np.ndarray:
    """Vectorised :func:`rank` of the rows of an int array ``[B, k]``.

    Example:
        >>> rank_block(np.array([[0, 1, 4], [2, 3, 4]]), 5).tolist()
        [2, 9]
    """
    subsets = np.asarray(subsets, dtype=np.int64)
    if subsets.ndim != 2:
        raise ValueError(f"subsets must be [B, k], got shape {subsets.shape}")
    k = subsets.shape[1]
    total = _check_vector(n, k)
    if subsets.size and (subsets.min() < 0 or subsets.max() >= n or np.any(np.diff(subsets, axis=1) <= 0)):
        raise ValueError(f"each row must be strictly increasing indices in [0, {n})")
    table = _binom_table(n, k)
    acc = np.zeros(subsets.shape[0], dtype=np.int64)
    for i in range(k):
        acc += table[k - i][n - 1 - subsets[:, i]]
    return (total - 1) - acc


def split_range(total: int, parts: int) -> list[tuple[int, int]]:
    """Split ``[0, total)`` into ``parts`` contiguous, near-equal, non-empty ranges.

    Example:
        >>> split_range(10, 3)
        [(0, 4), (4, 7), (7, 10)]
    """
    if total < 0 or parts < 1:
        raise ValueError(f"need total >= 0 and parts >= 1, got total={total}, parts={parts}")
    parts = max(1, min(parts, total)) if total else 1
    if total == 0:
        return []
    base, extra = divmod(total, parts)
    out, lo = [], 0
    for p in range(parts):
        hi = lo + base + (1 if p < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out
