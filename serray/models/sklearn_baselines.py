"""The scikit-learn baselines ``svm`` and ``logreg`` (torch-free: their runs never import torch).

Their logits are ``decision_function`` scores: SVC's one-vs-rest scores
(``decision_function_shape="ovr"``, no Platt scaling, so training stays deterministic and
fast) and logistic regression's multinomial logits (their softmax is ``predict_proba``).
Features arrive normalised by the trainer, so no scaler is built in.

Example:
    >>> from serray.models.contract import InputInfo
    >>> from serray.models.registry import get
    >>> svm = build_svm(get("svm").config(), InputInfo(shape=(88,), n_classes=4))
    >>> type(svm).__name__, svm.decision_function_shape
    ('SVC', 'ovr')
"""

from __future__ import annotations

from typing import Any, Mapping

from serray.models.contract import InputInfo

__all__ = ["build_svm", "build_logreg"]


def _dim(info: InputInfo, name: str) -> int:
    if len(info.shape) != 1:
        raise ValueError(f"{name} takes per-utterance or per-frame vectors, got sample shape {info.shape}")
    return int(info.shape[0])


def build_svm(config: Mapping[str, Any], info: InputInfo) -> Any:
    """``sklearn.svm.SVC`` from the config (``kernel``, ``C``, ``gamma``, ``class_weight``, ``max_iter``)."""
    from sklearn.svm import SVC

    _dim(info, "svm")
    return SVC(
        kernel=config["kernel"],
        C=float(config["C"]),
        gamma=config["gamma"],
        class_weight=config["class_weight"],
        max_iter=int(config["max_iter"]),
        decision_function_shape="ovr",
    )


def build_logreg(config: Mapping[str, Any], info: InputInfo) -> Any:
    """``sklearn.linear_model.LogisticRegression`` (multinomial, lbfgs) from the config."""
    from sklearn.linear_model import LogisticRegression

    _dim(info, "logreg")
    return LogisticRegression(C=float(config["C"]), class_weight=config["class_weight"], max_iter=int(config["max_iter"]))
