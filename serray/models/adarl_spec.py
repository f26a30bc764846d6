"""Spec of the ADARL family (paper 004), torch-free; the model is :mod:`serray.models.adarl`.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("adarl")
    >>> spec.input_kind, spec.aux_columns(spec.config())
    ('segments', {'domain': 'gender'})
    >>> spec.variants["backbone"]  # the paper's Table 3 ablation: lambda_1 = 0, pathway kept
    {'variant': 'attention', 'g1': 0.0}
"""

from __future__ import annotations

from typing import Any

from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["ADARL_ARMS", "ADARL_CONFIG", "ADARL_REDUCED_PRESET", "ADARL_VARIANTS"]

#: Values of the config key ``variant`` (what is built): the full model, the emotion pathway
#: alone (no domain pathway at all), the gradient-reversal baseline.
ADARL_VARIANTS: tuple[str, ...] = ("attention", "emotion_only", "adversarial")

#: The conditions of the paper's Table 3 as named config overrides: ``serray seeds adarl
#: --variant adarl --variant backbone --variant adversarial`` trains them side by side
#: (``ModelSpec.variants``; an explicit ``NAME:key=value`` list is applied over these).
#: ``backbone`` is the paper's ablation: "we adjust the weight of the loss L_D ... when
#: lambda_1 = 0", i.e. the full model with the domain pathway kept and g1 = 0 (the domain
#: pathway then learns from the emotion loss through the attention only);
#: ``emotion_only`` is the pathway-free network (not in the paper).
ADARL_ARMS: dict[str, dict[str, Any]] = {
    "adarl": {"variant": "attention"},
    "backbone": {"variant": "attention", "g1": 0.0},
    "adversarial": {"variant": "adversarial"},
    "emotion_only": {"variant": "emotion_only"},
}

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
    # architecture (Table 1): (3, 3) in both branches, as the table lists; the text's "different
    # scales" reading is --set kernel_sizes_second_branch=5 (see serray.models.adarl)
    "kernel_size_first_branch": 3,
    "kernel_sizes_second_branch": 3,
    "conv_channels": [16, 16, 16, 32],  # per branch; the layer outputs twice this
    "pool_sizes": [2, 2, 2, 6],
    "embedding_dim": 64,
    "attention_reduction": 2,  # FC(8, 4) + ReLU, FC(4, 8) + sigmoid
    "attention_fc1_bias": 1.0,  # not in the paper: keeps the hidden ReLUs alive (DomainAwareAttention); null = torch's init
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


register(ModelSpec(
    name="adarl", backend="torch", inputs={"x": InputSpec("segments", ("spectrogram",))}, default_config=ADARL_CONFIG,
    build=Lazy("serray.models.adarl", "build"),
    description="ADARL: gender pathway -> frequency attention on an emotion CNN pathway, center loss (Fan et al. 2021)",
    aux_labels={"domain": "gender"},
    presets={"reduced": ADARL_REDUCED_PRESET},
    variants=ADARL_ARMS,
    stage_plans={"heads": "all;emotion_head+domain_head+centers@5*0.1"},
))
