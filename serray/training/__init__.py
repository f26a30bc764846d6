"""Training core: fold data, one-fold trainers, parallel fold actors and training runs.

Heavy modules (torch, Ray) are imported on first use of the names below.

Example:
    >>> from serray.training import train_run       # doctest: +SKIP
    >>> train_run("W", "svm", features="egemaps")    # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PackedFeatures",
    "LabelTable",
    "TrainingInputs",
    "FoldData",
    "pack_features",
    "make_label_table",
    "normalize_features",
    "build_fold_data",
    "FoldResult",
    "TorchFoldTrainer",
    "SklearnFoldTrainer",
    "make_trainer",
    "check_config",
    "FoldActor",
    "SharedInputs",
    "put_inputs",
    "run_folds",
    "fold_resources",
    "RunResult",
    "train_run",
    "config_id",
]

_WHERE = {
    **dict.fromkeys(
        ("PackedFeatures", "LabelTable", "TrainingInputs", "FoldData", "pack_features", "make_label_table",
         "normalize_features", "build_fold_data"),
        "serray.training.data",
    ),
    **dict.fromkeys(("FoldResult", "TorchFoldTrainer", "SklearnFoldTrainer", "make_trainer", "check_config"), "serray.training.trainer"),
    **dict.fromkeys(("FoldActor", "SharedInputs", "put_inputs", "run_folds", "fold_resources"), "serray.training.actors"),
    **dict.fromkeys(("RunResult", "train_run", "config_id"), "serray.training.run"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'serray.training' has no attribute {name!r}")
