"""Training core: fold data, one-fold trainers, parallel fold actors and training runs.

Heavy modules (torch, Ray) are imported on first use of the names below.

Example:
    >>> from serray.training import Resources, RunSpec, train_run  # doctest: +SKIP
    >>> train_run(RunSpec("W", "svm", features="egemaps"), resources=Resources(device="cpu"))  # doctest: +SKIP
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
    "train_fold",
    "FoldActor",
    "SharedInputs",
    "put_inputs",
    "run_folds",
    "fold_resources",
    "RunSpec",
    "resolve_run_spec",
    "Resources",
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
    **dict.fromkeys(("FoldResult", "TorchFoldTrainer", "SklearnFoldTrainer", "make_trainer", "check_config", "train_fold"),
                    "serray.training.trainer"),
    **dict.fromkeys(("FoldActor", "SharedInputs", "put_inputs", "fold_resources"), "serray.training.actors"),
    "run_folds": "serray.training.executor",
    **dict.fromkeys(("RunResult", "train_run", "config_id"), "serray.training.run"),
    "RunSpec": "serray.training.spec",
    "resolve_run_spec": "serray.training.resolve",
    "Resources": "serray.training.resources",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'serray.training' has no attribute {name!r}")
