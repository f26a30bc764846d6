"""Specs of the baseline families (torch-free): SVM, logistic regression, MLP, DCNN, CNN-LSTM.

Their models live in :mod:`serray.models.baselines` (torch) and
:mod:`serray.models.sklearn_baselines` (torch-free), imported only when a model is built.

Example:
    >>> from serray.models import registry
    >>> registry.get("svm").config()["kernel"]
    'linear'
"""

from __future__ import annotations

from typing import Any

from serray.models.contract import InputSpec
from serray.models.registry import TORCH_TRAINING_DEFAULTS, Lazy, ModelSpec, register

__all__ = ["SVM_CONFIG", "LOGREG_CONFIG", "MLP_CONFIG", "DCNN_CONFIG", "CNN_LSTM_CONFIG", "TORCH_TRAINING", "SMALL_SEQ"]

SVM_CONFIG: dict[str, Any] = {"kernel": "linear", "C": 1.0, "gamma": "scale", "class_weight": None, "max_iter": -1}
LOGREG_CONFIG: dict[str, Any] = {"C": 1.0, "class_weight": None, "max_iter": 2000}

#: The training keys the baselines' default configs spell out (so that they show in
#: `--set` listings and config ids), with the values of the one source of training
#: defaults, :data:`serray.models.registry.TORCH_TRAINING_DEFAULTS`.
TORCH_TRAINING: dict[str, Any] = {
    k: TORCH_TRAINING_DEFAULTS[k] for k in ("optimizer", "momentum", "weight_decay", "lr_decay", "grad_clip")
}

MLP_CONFIG: dict[str, Any] = {
    **TORCH_TRAINING,
    "epochs": 100,
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "patience": 15,
    "early_stop": "ua",
    "hidden_sizes": [256, 128],
    "dropout": 0.3,
}

DCNN_CONFIG: dict[str, Any] = {
    **TORCH_TRAINING,
    "epochs": 50,
    "batch_size": 64,
    "lr": 1e-3,
    "patience": 5,
    "early_stop": "loss",
    "max_frames": 0,
    "channels": 128,
    # conv1 40->128 with kernel 15, conv2 128->128 with kernel 5, no convolution biases:
    # the sizes paper 000's parameter counts imply (derivation: serray.models.baselines.DCNN)
    "first_kernel": 15,
    "kernel_size": 5,
    "conv_bias": False,
    "dilations": [1, 2],
    "hidden": 128,
    "dropout": 0.3,
    "pooling": "mean",
}

CNN_LSTM_CONFIG: dict[str, Any] = {
    **TORCH_TRAINING,
    "epochs": 50,
    "batch_size": 64,
    "lr": 1e-3,
    "patience": 5,
    "early_stop": "loss",
    "max_frames": 0,
    "channels": [64, 64, 128, 128],
    "kernel_size": 3,
    "pool": 2,
    "lstm_hidden": 256,
    "dropout": 0.3,
}

#: Shorter presets for CPU smoke runs and tests.
SMALL_SEQ = {"epochs": 8, "patience": 3}


_VECTORS = {"x": InputSpec("vector", ("egemaps",))}
_MFB = {"x": InputSpec("sequence", ("mfb",))}

register(ModelSpec(
    name="svm", backend="sklearn", inputs=_VECTORS, default_config=SVM_CONFIG,
    build=Lazy("serray.models.sklearn_baselines", "build_svm"),
    description="support vector machine (scikit-learn SVC) on utterance features",
    presets={"rbf": {"kernel": "rbf"}},
))
register(ModelSpec(
    name="logreg", backend="sklearn", inputs=_VECTORS, default_config=LOGREG_CONFIG,
    build=Lazy("serray.models.sklearn_baselines", "build_logreg"),
    description="multinomial logistic regression (scikit-learn) on utterance features",
))
register(ModelSpec(
    name="mlp", backend="torch", inputs=_VECTORS, default_config=MLP_CONFIG,
    build=Lazy("serray.models.baselines", "build_mlp"),
    description="fully connected network on utterance features",
    presets={"small": {"hidden_sizes": [64], "epochs": 30, "patience": 5}},
    stage_plans={"finetune_out": "all;out@10*0.1"},
))
register(ModelSpec(
    name="dcnn", backend="torch", inputs=_MFB, default_config=DCNN_CONFIG,
    build=Lazy("serray.models.baselines", "build_dcnn"),
    description="dilated 1-D CNN on log-mel sequences (paper 000 sec. 3.1.1)",
    presets={"small": {**SMALL_SEQ, "channels": 32, "hidden": 32}},
    # generic fine-tuning plans (not arms of paper 000: its NHNN fc / fc_conv arms are the
    # nhnn model's variants, with per-group heads): after training everything, fine-tune
    # with both convolutions frozen (fc) or with the first frozen (fc_conv) at lr / 10
    stage_plans={"fc": "all;fc+out@10*0.1", "fc_conv": "all;all-conv1@10*0.1"},
))
register(ModelSpec(
    name="cnn_lstm", backend="torch", inputs=_MFB, default_config=CNN_LSTM_CONFIG,
    build=Lazy("serray.models.baselines", "build_cnn_lstm"),
    description="1-D CNN-LSTM on log-mel sequences (paper 000 sec. 3.1.3)",
    presets={"small": {**SMALL_SEQ, "channels": [16, 16, 32, 32], "lstm_hidden": 32}},
    stage_plans={"lstm_out": "all;lstm+out@10*0.1"},
))
