"""Spec of ``mtl`` (paper 002: DNN/LSTM with gender and naturalness auxiliary tasks and an ELM
back-end), torch-free; the model is :mod:`serray.models.mtl`, the back-end :mod:`serray.models.elm`.

Conditions of the paper as named variants (:data:`MTL_ARMS`, ``ModelSpec.variants``):
STL ``lambda_gender=0,lambda_naturalness=0``, Gender-MTL ``lambda_naturalness=0``,
Naturalness-MTL ``lambda_gender=0``, ALL-MTL both lambdas as configured (0.1 each by
default), for the DNN and the LSTM model. The config keys ``gender`` and ``naturalness``
name the manifest columns of the auxiliary labels (set one to an empty value to drop that
head).

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("mtl")
    >>> spec.default_features, spec.aux_columns(spec.config())
    (('lld',), {'gender': 'gender', 'naturalness': 'naturalness'})
    >>> spec.variants["lstm-gender"]
    {'arch': 'lstm', 'lambda_naturalness': 0.0}
    >>> check_mtl_config({**MTL_CONFIG, "arch": "gru"})
    Traceback (most recent call last):
    ...
    ValueError: arch must be one of ('dnn', 'lstm'), got 'gru'
"""

from __future__ import annotations

from typing import Any, Mapping

from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["MTL_ARCHS", "MTL_ARMS", "MTL_CONFIG", "MTL_SMALL", "check_mtl_config"]

MTL_ARCHS: tuple[str, ...] = ("dnn", "lstm")

#: Paper 002 sec. 4-5 (docs/models.md). ``batch_size`` counts utterances (every frame of
#: an utterance is a training sample carrying its labels; the paper's 128 counts frames).
MTL_CONFIG: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 3e-3,
    "batch_size": 16,
    "epochs": 30,
    "patience": 5,
    "early_stop": "ua",
    "grad_clip": 0.0,
    "max_frames": 0,
    "arch": "dnn",
    "context": 12,  # DNN: +-12 frames (25 frames, 250 ms) around each frame
    "hidden": 256,
    "dnn_layers": 3,
    "lstm_layers": 2,
    "dropout": 0.5,
    "lambda_gender": 0.1,
    "lambda_naturalness": 0.1,
    "gender": "gender",  # manifest column of the gender task
    "naturalness": "naturalness",  # manifest column of the naturalness task
    "threshold": 0.2,  # functional: share of frames whose posterior exceeds this
    "elm_hidden": 120,
    "elm_ridge": 1.0,
}

#: Auxiliary-task conditions of the paper (sec. 5): the lambdas each arm sets to 0; the
#: other lambdas keep the run's config (the paper's 0.1 by default, or a tuned value).
_CONDITIONS: dict[str, dict[str, float]] = {
    "stl": {"lambda_gender": 0.0, "lambda_naturalness": 0.0},
    "gender": {"lambda_naturalness": 0.0},
    "naturalness": {"lambda_gender": 0.0},
    "all": {},
}

#: The paper's arms as named config overrides (``serray seeds mtl --variant stl --variant
#: all``, see ``ModelSpec.variants``): ``stl``, ``gender``, ``naturalness`` and ``all``
#: keep the config's ``arch`` (``dnn`` by default); ``dnn-<arm>`` and ``lstm-<arm>`` also
#: fix it, for the paper's DNN-/LSTM- columns side by side. An arm zeroes the lambdas of
#: the tasks it leaves out and keeps the others, so with a config whose lambda of a kept
#: task is 0 (e.g. a tuned best.yaml) that arm trains no auxiliary term for it.
MTL_ARMS: dict[str, dict[str, Any]] = {
    **{name: dict(over) for name, over in _CONDITIONS.items()},
    **{f"{arch}-{name}": {"arch": arch, **over} for arch in ("dnn", "lstm") for name, over in _CONDITIONS.items()},
}

#: CPU-sized preset: narrower network, shorter training.
MTL_SMALL: dict[str, Any] = {"hidden": 128, "epochs": 12, "patience": 4, "batch_size": 16}


def check_mtl_config(config: Mapping[str, Any]) -> None:
    """Check the model keys of an ``mtl`` config (one clear line per problem).

    Raises:
        ValueError: Unknown ``arch``; negative lambda; bad sizes, dropout or threshold.
    """
    if config["arch"] not in MTL_ARCHS:
        raise ValueError(f"arch must be one of {MTL_ARCHS}, got {config['arch']!r}")
    for key in ("lambda_gender", "lambda_naturalness"):
        if not float(config[key]) >= 0:
            raise ValueError(f"{key} must be >= 0, got {config[key]}")
    for key in ("hidden", "dnn_layers", "lstm_layers", "elm_hidden"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]}")
    if int(config["context"]) < 0:
        raise ValueError(f"context must be >= 0 (frames on each side), got {config['context']}")
    if not 0.0 <= float(config["dropout"]) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config['dropout']}")
    if not 0.0 <= float(config["threshold"]) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {config['threshold']}")
    if not float(config["elm_ridge"]) > 0:
        raise ValueError(f"elm_ridge must be > 0, got {config['elm_ridge']}")


register(ModelSpec(
    name="mtl", backend="torch", inputs={"x": InputSpec("sequence", ("lld",))}, default_config=MTL_CONFIG,
    build=Lazy("serray.models.mtl", "build"),
    description="frame-level DNN/LSTM, emotion + gender + naturalness heads, posterior functionals -> ELM (paper 002)",
    aux_labels={"gender": "gender", "naturalness": "naturalness"},
    presets={"small": MTL_SMALL},
    variants=MTL_ARMS,
    stage_plans={},
    fitted_after_training=True,  # the ELM back-end is fitted after training (serray.models.mtl)
))
