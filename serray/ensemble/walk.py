"""The subset walk: the best subsets of size k in a rank range, scored from their margins.

Subsets are walked in lexicographic (combinatorial rank) order, by numpy on the CPU or by
torch on the CPU or a GPU; both compute the same sums in the same order, hence identical
scores. :func:`search_range` is the building block of the in-process search and of the
Ray runner's shards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from serray.ensemble.combinatorics import n_choose_k, unrank, unrank_block
from serray.ensemble.margins import Margins, _flip_mask, prune_margins
from serray.ensemble.members import _check_choice
from serray.metrics import ua_from_counts

if TYPE_CHECKING:  # torch stays lazy: imported by the torch walk only
    import torch

__all__ = ["BACKENDS", "search_range", "merge_top"]

BACKENDS: tuple[str, ...] = ("numpy", "torch", "auto")


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
    mm = m.n_members
    walk = _NumpyWalk(m, k, start, top, batch)
    r = start
    while r < stop:
        tp, ts = walk.prefix_sums()
        q0 = walk.combo[-1]
        q_end = min(mm, q0 + (stop - r))
        q = q0
        while q < q_end:
            n = min(q_end - q, batch - walk.fill)
            walk.compare(q, n, tp, ts)
            q += n
        r += q_end - q0
        if r >= stop:
            break
        i = _next_prefix(walk.combo, mm, k)
        if i < 0:
            break
        walk.rebuild(i)
    walk.flush()
    return walk.best.scores, walk.best.ranks


class _NumpyWalk:
    """State of one :func:`_walk_numpy`: the current subset, its prefix sums and the block being filled.

    ``negp[d]`` (``negs[d]`` for ``vote``'s logit margins) is the negated sum of the
    first ``d + 1`` members of the prefix; rows ``[0, fill)`` of ``ok`` hold the entry
    tests of the subsets of ranks ``[block_start, block_start + fill)``.
    """

    def __init__(self, m: Margins, k: int, start: int, top: int, batch: int) -> None:
        width, dtype = m.width, m.primary.dtype
        self.m, self.k, self.batch = m, k, batch
        self.vote = m.fusion == "vote"
        self.best = _TopM(top)
        self.ok = np.empty((batch, width), dtype=bool)
        if self.vote:
            self.eq = np.empty((batch, width), dtype=bool)
            self.sraw = np.empty((batch, width), dtype=bool)
            self.flip = _flip_mask(m)
        self.depth = k - 1
        self.negp = np.zeros((max(self.depth, 1), width), dtype=dtype)
        self.negs = np.zeros((max(self.depth, 1), width), dtype=dtype) if self.vote else None
        self.zero = np.zeros(width, dtype=dtype)
        self.combo = list(unrank(start, m.n_members, k))
        self.fill, self.block_start = 0, start
        self.rebuild(0)

    def rebuild(self, from_pos: int) -> None:
        """Recompute the prefix sums from prefix position ``from_pos`` on."""
        prim, sec, zero = self.m.primary, self.m.secondary, self.zero
        for d in range(from_pos, self.depth):
            prevp = self.negp[d - 1] if d > 0 else zero
            np.subtract(prevp, prim[self.combo[d]], out=self.negp[d])
            if self.vote:
                prevs = self.negs[d - 1] if d > 0 else zero
                np.subtract(prevs, sec[self.combo[d]], out=self.negs[d])

    def prefix_sums(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The negated prefix sums of the primary (and, for ``vote``, the logit) margins."""
        if self.depth == 0:
            return self.zero, self.zero if self.vote else None
        return self.negp[self.depth - 1], self.negs[self.depth - 1] if self.vote else None

    def compare(self, q: int, n: int, tp: np.ndarray, ts: np.ndarray | None) -> None:
        """Entry tests of the ``n`` subsets whose last member is ``q .. q + n - 1``; flush a full block."""
        prim = self.m.primary
        rows = slice(self.fill, self.fill + n)
        np.less(prim[q : q + n], tp, out=self.ok[rows])
        if self.vote:
            _vote_entries(prim[q : q + n], self.m.secondary[q : q + n], tp, ts, self.flip, self.ok[rows],
                          self.eq[rows], self.sraw[rows])
        self.fill += n
        if self.fill == self.batch:
            self.flush()

    def flush(self) -> None:
        """Score the block's subsets and keep the best."""
        if self.fill == 0:
            return
        counts = _count_numpy(self.ok[: self.fill], self.m, entry_level=self.vote)
        scores = ua_from_counts(counts + self.m.base_correct, self.m.support)
        self.best.push(np.atleast_1d(scores), np.arange(self.block_start, self.block_start + self.fill, dtype=np.int64))
        self.block_start += self.fill
        self.fill = 0


def _vote_entries(
    prim: np.ndarray, sec: np.ndarray, tp: np.ndarray, ts: np.ndarray, flip: np.ndarray,
    ok: np.ndarray, eq: np.ndarray, sraw: np.ndarray,
) -> None:
    """``vote``: an entry with a tied vote margin is decided by its logit margin (in place on ``ok``).

    ``ok`` holds the vote test ``prim < tp``; ``eq`` and ``sraw`` are scratch of its shape.
    """
    np.equal(prim, tp, out=eq)
    np.less(sec, ts, out=sraw)
    np.logical_xor(sraw, flip, out=sraw)
    np.logical_and(eq, sraw, out=eq)
    np.logical_or(ok, eq, out=ok)


def _next_prefix(combo: list[int], mm: int, k: int) -> int:
    """Advance ``combo`` (in place) to the next prefix of its first k-1 members, lexicographically.

    Returns:
        The first prefix position that changed, or -1 when no prefix is left.
    """
    # the rightmost prefix position that can still move
    i = k - 2
    while i >= 0 and combo[i] == mm - k + i:
        i -= 1
    if i < 0:
        return i
    combo[i] += 1
    for j in range(i + 1, k):
        combo[j] = combo[j - 1] + 1
    return i


def _walk_torch(
    m: Margins, k: int, start: int, stop: int, top: int, batch: int, device: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Block evaluator for torch (CPU or GPU): gathers prefix sums for ``batch`` subsets.

    Produces the same sums in the same order as :func:`_walk_numpy`, hence identical
    scores.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mm = m.n_members
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
        counts_np = _count_torch(ok, n_rows, vote).cpu().numpy()
        scores = ua_from_counts(counts_np + m.base_correct, m.support)
        best.push(np.atleast_1d(scores), np.arange(b0, b0 + bsz, dtype=np.int64))
    return best.scores, best.ranks


def _count_torch(ok: "torch.Tensor", n_rows: list[int], entry_level: bool) -> "torch.Tensor":
    """Correct rows per class ``[B, C]`` from entry booleans ``[B, L]`` (see :func:`_count_numpy`)."""
    import torch

    bsz, c = ok.shape[0], len(n_rows)
    counts = torch.zeros((bsz, c), dtype=torch.int64, device=ok.device)
    off = 0
    for j in range(c):
        n = n_rows[j]
        if n == 0:
            continue
        v = ok[:, off : off + (c - 1) * n].reshape(bsz, c - 1, n)
        off += (c - 1) * n
        if entry_level:
            good = v.all(dim=1)
        else:
            good = torch.ones((bsz, n), dtype=torch.bool, device=ok.device)
            if j > 0:
                good &= v[:, :j].all(dim=1)
            if j < c - 1:
                good &= ~v[:, j:].any(dim=1)
        counts[:, j] = good.sum(dim=1)
    return counts


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
