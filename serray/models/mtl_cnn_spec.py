"""Spec of ``mtl_cnn`` (paper 000's MTL-CNN baseline), torch-free; the model is :mod:`serray.models.mtl_cnn`.

This family is the worked example of the model-family contract (README, "Add a model
family"): one torch module, this spec module, and ``serray/search_spaces/mtl_cnn.yaml``.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("mtl_cnn")
    >>> spec.default_features, spec.aux_columns(spec.config()), spec.config()["w_gender"]
    (('mfb',), {'gender': 'gender'}, 1.0)
"""

from __future__ import annotations

from typing import Any

from serray.models.baselines_spec import DCNN_CONFIG, SMALL_SEQ
from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["MTL_CNN_CONFIG"]

#: The dcnn settings plus the gender head (paper 000, docs/models.md: FC(128, 128) ->
#: FC(128, 2); loss CE_emotion + w_gender * CE_gender, w_gender 1.0 by default).
MTL_CNN_CONFIG: dict[str, Any] = {
    **DCNN_CONFIG,
    "w_gender": 1.0,
    "gender_hidden": 128,
}

register(ModelSpec(
    name="mtl_cnn", backend="torch", inputs={"x": InputSpec("sequence", ("mfb",))}, default_config=MTL_CNN_CONFIG,
    build=Lazy("serray.models.mtl_cnn", "build"),
    description="dcnn encoder with an emotion head and a gender head, CE_emotion + w_gender CE_gender (paper 000)",
    aux_labels={"gender": "gender"},
    presets={"small": {**SMALL_SEQ, "channels": 32, "hidden": 32, "gender_hidden": 32}},
    stage_plans={"fc": "all;fc+out+gender_fc+gender_out@10*0.1", "fc_conv": "all;all-conv1@10*0.1"},
))
