"""Seed-ensemble search: late fusion of many trained members (paper 003, sec. 4.4-4.5).

Build :class:`Members` from the predictions store with :func:`members_from_predictions`,
then call :func:`run_ensemble_search` (exhaustive n-choose-k search on Ray, or greedy
forward selection). Subsets are selected on pooled validation UA; selecting on test
(``selection="test-optimistic"``) is allowed but flagged with :data:`OPTIMISTIC_WARNING`.

Example:
    >>> import numpy as np
    >>> from serray.ensemble import Members, exhaustive_search
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 40)
    >>> lg = rng.normal(size=(4, 40, 2)).astype("float32")
    >>> m = Members.from_arrays(lg, y, lg, y, classes=["neg", "pos"])
    >>> exhaustive_search(m, [2], top=1)["k"].tolist()
    [2]
"""

from serray.ensemble.combinatorics import n_choose_k, next_combination, rank, unrank, unrank_block
from serray.ensemble.greedy import greedy_selection
from serray.ensemble.nested import NESTED_NOTE, NestedEstimate, nested_estimate
from serray.ensemble.runner import METHODS, EnsembleResult, distributed_search, run_ensemble_search
from serray.ensemble.search import (
    BACKENDS,
    FUSIONS,
    OPTIMISTIC_WARNING,
    SELECTIONS,
    VALIDATION_NOTE,
    Members,
    evaluate_subset,
    exhaustive_search,
    fused_predictions,
    members_from_predictions,
    selection_note,
)

__all__ = [
    "BACKENDS",
    "FUSIONS",
    "METHODS",
    "NESTED_NOTE",
    "OPTIMISTIC_WARNING",
    "SELECTIONS",
    "VALIDATION_NOTE",
    "EnsembleResult",
    "Members",
    "NestedEstimate",
    "distributed_search",
    "evaluate_subset",
    "exhaustive_search",
    "fused_predictions",
    "greedy_selection",
    "members_from_predictions",
    "n_choose_k",
    "nested_estimate",
    "next_combination",
    "rank",
    "run_ensemble_search",
    "selection_note",
    "unrank",
    "unrank_block",
]
