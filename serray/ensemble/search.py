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

Where the parts live: :mod:`serray.ensemble.members` (:class:`Members`),
:mod:`serray.ensemble.fusion` (the float64 reference fusion), :mod:`serray.ensemble.margins`
and :mod:`serray.ensemble.walk` (the subset walk, numpy or torch). This module keeps the
selection modes, the leaderboard and :func:`exhaustive_search`, and re-exports the
others' public names.

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

import logging
import time
from collections import Counter
from typing import Iterable

import numpy as np
import pandas as pd

from serray.ensemble.combinatorics import MAX_VECTOR_RANK, n_choose_k, unrank
from serray.ensemble.fusion import FUSIONS, evaluate_subset, fused_predictions
from serray.ensemble.margins import Margins, build_margins, prune_margins
from serray.ensemble.members import Members, _check_choice, members_from_predictions
from serray.ensemble.walk import BACKENDS, merge_top, search_range

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

SELECTIONS: tuple[str, ...] = ("validation", "test-optimistic")

#: Note attached to every result selected on test data.
OPTIMISTIC_WARNING = (
    "OPTIMISTIC ESTIMATE: ensemble members were selected on the test data "
    "(selection='test-optimistic'), so the reported test UA/WA are optimistically biased "
    "and are not an unbiased estimate of performance on unseen data."
)
#: Note attached to results selected on validation data. It says what the selection saw, as
#: best.yaml does for a search: no test logits, but validation logits that are not fresh
#: (an early-stopped member's epoch was chosen on them) and, under LOSO or
#: k-fold, come from speakers who are other folds' test speakers.
VALIDATION_NOTE = (
    "Ensemble members were selected on pooled validation data only (test logits not used). "
    "Not a nested estimate: members that used their validation logits for early stopping "
    "(torch models, unless trained with early_stop=none) are favoured, since their epoch was "
    "chosen on those logits, and under LOSO/k-fold a fold's validation speakers are other "
    "folds' test speakers, so the selection has seen every speaker's labels; the test UA/WA "
    "of the chosen subset may be somewhat optimistic."
)


def selection_note(selection: str) -> str:
    """The note a result selected with ``selection`` must carry."""
    _check_choice("selection", selection, SELECTIONS)
    return OPTIMISTIC_WARNING if selection == "test-optimistic" else VALIDATION_NOTE


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
