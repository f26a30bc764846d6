"""Spec of ``nhnn`` (paper 000's nonparametric hierarchical network), torch-free.

The model lives in :mod:`serray.models.nhnn`. Two inputs: ``x``, the log-mel (MFB)
sequence the ``dcnn`` encoder and classifier read (primary input), and ``cluster``, the
eGeMAPS vector a Dirichlet-process Gaussian mixture groups the utterances by (fitted in
the model's ``prepare`` hook on the fold's training part only). Two auxiliary label roles,
``gender`` and ``speaker``, are read only for the per-fold group record (no loss uses
them; unknown values are left out of the counts).

Config keys besides the ``dcnn`` ones:

* ``freeze``: the frozen-layer choice of the group stage. ``fc``: both convolutions stay
  shared and frozen, every group adapts its own copy of the fully connected layers;
  ``fc_conv``: the first convolution stays shared and frozen, every group adapts its own
  copy of the other convolution(s) and the fully connected layers.
* ``max_components``, ``dp_concentration``, ``covariance``, ``dp_reg_covar``,
  ``dp_max_iter``: scikit-learn ``BayesianGaussianMixture`` (dirichlet-process prior;
  ``n_components``, ``weight_concentration_prior``, ``covariance_type``, ``reg_covar``,
  ``max_iter``). The concentration default 0.1 is scikit-learn's own default
  (1 / n_components) for 10 components.
* ``min_share``: components holding less than this share of the training utterances
  (hard assignment) are dropped, their members reassigned to the surviving component
  with the highest posterior.
* ``stages``: the plan name ``nhnn`` (default): stage 1 trains the shared DCNN, stage 2
  (a stage training only the ``heads`` group) fine-tunes the group heads. Write e.g.
  ``all-heads;heads@20*0.5`` for another epoch budget or lr factor of the group stage.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("nhnn")
    >>> list(spec.inputs), spec.default_features
    (['x', 'cluster'], ('mfb', 'egemaps'))
    >>> cfg = spec.config()
    >>> cfg["freeze"], cfg["min_share"], cfg["stages"], spec.stage_plans["nhnn"]
    ('fc', 0.1, 'nhnn', 'all-heads;heads')
"""

from __future__ import annotations

from typing import Any

from serray.models.baselines_spec import DCNN_CONFIG, SMALL_SEQ
from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["NHNN_CONFIG", "FREEZE_CHOICES", "COVARIANCES", "STAGE_PLANS"]

#: Frozen-layer choices of the group stage (paper 000 sec. 5).
FREEZE_CHOICES: tuple[str, ...] = ("fc", "fc_conv")
#: ``covariance_type`` values of scikit-learn's mixtures.
COVARIANCES: tuple[str, ...] = ("full", "diag", "tied", "spherical")
#: Stage 1: the shared DCNN (everything but the heads); stage 2: only the group heads.
STAGE_PLANS: dict[str, str] = {"nhnn": "all-heads;heads"}

NHNN_CONFIG: dict[str, Any] = {
    **DCNN_CONFIG,
    "stages": "nhnn",
    "freeze": "fc",
    "max_components": 10,
    "dp_concentration": 0.1,
    "covariance": "full",
    "dp_reg_covar": 1e-3,
    "dp_max_iter": 500,
    "min_share": 0.1,
}

register(ModelSpec(
    name="nhnn", backend="torch",
    inputs={"x": InputSpec("sequence", ("mfb",)), "cluster": InputSpec("vector", ("egemaps",))},
    default_config=NHNN_CONFIG,
    build=Lazy("serray.models.nhnn", "build"),
    description="dcnn + Dirichlet-process eGeMAPS groups with per-group heads, posterior-weighted (paper 000)",
    aux_labels={"gender": "gender", "speaker": "speaker"},
    stage_plans=STAGE_PLANS,
    presets={"small": {**SMALL_SEQ, "channels": 32, "hidden": 32}},
))
