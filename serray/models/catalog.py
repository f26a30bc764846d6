"""The model catalogue: every family's registry entry and default config, without torch.

Looking a model up (``serray train``'s argument checks, a Tune trial's config, a search
space's key check) must not import torch or scikit-learn: the CLI, the Tune driver and
each trial's coordinating actor never build a model, and importing torch costs over a
second in every such process. So the specs live here, with builders that import their
family module (``serray.models.baselines``, ``serray.models.adarl``) on first call, which
happens only where a model is built: inside the fold actors and seed tasks.

Adding a family: its module (torch or scikit-learn code and a ``build(config, info)``
function) plus its config and one :func:`~serray.models.registry.register` call here.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from serray.models.registry import InputInfo, ModelSpec, register

__all__ = [
    "SVM_CONFIG",
    "LOGREG_CONFIG",
    "MLP_CONFIG",
    "DCNN_CONFIG",
    "CNN_LSTM_CONFIG",
    "ADARL_CONFIG",
    "ADARL_REDUCED_PRESET",
    "ADARL_VARIANTS",
]


class _Lazy:
    """A builder that imports ``module`` and calls its ``attr`` (picklable by value)."""

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr

    def __call__(self, config: Mapping[str, Any], info: InputInfo) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)(config, info)

    def __repr__(self) -> str:
        return f"{self.module}.{self.attr}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Lazy) and (self.module, self.attr) == (other.module, other.attr)

    def __hash__(self) -> int:
        return hash((self.module, self.attr))


# ---------------------------------------------------------------- baselines (serray.models.baselines)

SVM_CONFIG: dict[str, Any] = {"kernel": "linear", "C": 1.0, "gamma": "scale", "class_weight": None, "max_iter": -1}
LOGREG_CONFIG: dict[str, Any] = {"C": 1.0, "class_weight": None, "max_iter": 2000}

_TORCH_TRAINING: dict[str, Any] = {
    "optimizer": "adam",
    "momentum": 0.0,
    "weight_decay": 0.0,
    "lr_decay": 1.0,
    "grad_clip": 0.0,
}

MLP_CONFIG: dict[str, Any] = {
    **_TORCH_TRAINING,
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
    **_TORCH_TRAINING,
    "epochs": 50,
    "batch_size": 64,
    "lr": 1e-3,
    "patience": 5,
    "early_stop": "loss",
    "max_frames": 0,
    "channels": 128,
    "kernel_size": 5,
    "dilations": [1, 2],
    "hidden": 128,
    "dropout": 0.3,
    "pooling": "mean",
}

CNN_LSTM_CONFIG: dict[str, Any] = {
    **_TORCH_TRAINING,
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
_SMALL_SEQ = {"epochs": 8, "patience": 3}


# ---------------------------------------------------------------- ADARL (paper 004, serray.models.adarl)

ADARL_VARIANTS: tuple[str, ...] = ("attention", "backbone", "adversarial")

#: Paper settings (sec. 3.2, Table 1). Keys the generic torch trainer reads: optimizer, lr,
#: lr_decay, weight_decay, momentum, batch_size, epochs, patience, domain. The rest are
#: model keys read by :func:`serray.models.adarl.build`.
ADARL_CONFIG: dict[str, Any] = {
    # training (sec. 3.2)
    "optimizer": "sgd",
    "lr": 0.2,
    "lr_decay": 0.7,  # multiplicative, applied after every epoch ("decreases to 70 %")
    "weight_decay": 4e-5,
    "momentum": 0.0,  # not stated in the paper; plain SGD (torch's default) with lr 0.2
    "batch_size": 32,
    "epochs": 50,
    "patience": 10,  # early stopping on validation UA (not in the paper)
    "domain": "gender",
    # loss (eq. 9)
    "g1": 1.0,
    "g2": 1.0,
    "g3": 0.5,
    "variant": "attention",
    # architecture (Table 1); the second kernel size of each multi-scale layer is not given
    "kernel_size_first_branch": 3,
    "kernel_sizes_second_branch": 5,
    "conv_channels": [16, 16, 16, 32],  # per branch; the layer outputs twice this
    "pool_sizes": [2, 2, 2, 6],
    "embedding_dim": 64,
    "attention_reduction": 2,  # FC(8, 4) + ReLU, FC(4, 8) + sigmoid
    "dropout": 0.0,  # not in the paper; applied before each pathway's last FC
    "center_lr_scale": 1.0,
    "center_feature": "pre_bn",  # see serray.models.adarl's docstring
    "grl_lambda": 1.0,  # gradient-reversal factor of the adversarial variant
    "freq_pool": 1,  # average-pool the input along frequency by this factor first
    "time_pool": 1,  # ... and along time by this factor
}

#: CPU-friendly preset (about 1/20 of the paper model's compute): the input is average-pooled
#: 4x along frequency and 2x along time ([2, 400, 300] -> [2, 100, 150]), the last pool is 3
#: so layer 4 still gives 4 frequency rows x 6 frames (4 attention weights), the convolutions
#: are half as wide and training is shorter (at lr_decay 0.7 the lr is < 1 % of its start
#: after 12 epochs anyway).
ADARL_REDUCED_PRESET: dict[str, Any] = {
    "freq_pool": 4,
    "time_pool": 2,
    "pool_sizes": [2, 2, 2, 3],
    "conv_channels": [8, 8, 8, 16],
    "embedding_dim": 32,
    "epochs": 12,
    "patience": 5,
}

register(
    ModelSpec(
        name="svm",
        backend="sklearn",
        input_kind="vector",
        default_features=("egemaps",),
        default_config=SVM_CONFIG,
        build=_Lazy("serray.models.baselines", "build_svm"),
        description="support vector machine (scikit-learn SVC) on utterance features",
        presets={"rbf": {"kernel": "rbf"}},
    )
)
register(
    ModelSpec(
        name="logreg",
        backend="sklearn",
        input_kind="vector",
        default_features=("egemaps",),
        default_config=LOGREG_CONFIG,
        build=_Lazy("serray.models.baselines", "build_logreg"),
        description="multinomial logistic regression (scikit-learn) on utterance features",
    )
)
register(
    ModelSpec(
        name="mlp",
        backend="torch",
        input_kind="vector",
        default_features=("egemaps",),
        default_config=MLP_CONFIG,
        build=_Lazy("serray.models.baselines", "build_mlp"),
        description="fully connected network on utterance features",
        presets={"small": {"hidden_sizes": [64], "epochs": 30, "patience": 5}},
    )
)
register(
    ModelSpec(
        name="dcnn",
        backend="torch",
        input_kind="sequence",
        default_features=("mfb",),
        default_config=DCNN_CONFIG,
        build=_Lazy("serray.models.baselines", "build_dcnn"),
        description="dilated 1-D CNN on log-mel sequences (paper 000 sec. 3.1.1)",
        presets={"small": {**_SMALL_SEQ, "channels": 32, "hidden": 32}},
    )
)
register(
    ModelSpec(
        name="cnn_lstm",
        backend="torch",
        input_kind="sequence",
        default_features=("mfb",),
        default_config=CNN_LSTM_CONFIG,
        build=_Lazy("serray.models.baselines", "build_cnn_lstm"),
        description="1-D CNN-LSTM on log-mel sequences (paper 000 sec. 3.1.3)",
        presets={"small": {**_SMALL_SEQ, "channels": [16, 16, 32, 32], "lstm_hidden": 32}},
    )
)

register(
    ModelSpec(
        name="adarl",
        backend="torch",
        input_kind="segments",
        default_features=("spectrogram",),
        default_config=ADARL_CONFIG,
        build=_Lazy("serray.models.adarl", "build"),
        description="ADARL: gender pathway -> frequency attention on an emotion CNN pathway, center loss (Fan et al. 2021)",
        domain_column="gender",
        presets={"reduced": ADARL_REDUCED_PRESET},
    )
)
