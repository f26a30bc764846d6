"""Hyperparameter search: search spaces, the options both searches take, Tune wiring, nested search.

The names below are imported on first use, so ``import serray.tune`` imports neither Ray
nor Optuna.

Example:
    >>> from serray.tune import SearchOptions, tune_model                        # doctest: +SKIP
    >>> from serray.training import RunSpec                                       # doctest: +SKIP
    >>> tune_model(RunSpec("W", "mlp", features="egemaps"), SearchOptions(num_samples=20))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SearchSpace",
    "SearchSpaceError",
    "load_search_space",
    "SearchOptions",
    "prepare_search",
    "tune_model",
    "TuneOutcome",
    "nested_tune",
    "NestedOutcome",
]

_WHERE = {
    **dict.fromkeys(("SearchSpace", "SearchSpaceError", "load_search_space"), "serray.tune.space"),
    **dict.fromkeys(("SearchOptions", "prepare_search"), "serray.tune.options"),
    **dict.fromkeys(("tune_model", "TuneOutcome"), "serray.tune.runner"),
    **dict.fromkeys(("nested_tune", "NestedOutcome"), "serray.tune.nested"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'serray.tune' has no attribute {name!r}")
