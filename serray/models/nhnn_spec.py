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
  (1 / n_components) for 10 components. ``covariance`` is ``diag`` by default, not the
  paper's ``full``: an 88-d full covariance per component is not estimable from
  EmoDB-sized training parts (the fit never leaves its k-means start; measurements in
  :mod:`serray.models.nhnn_groups`); ``full`` remains a choice (and is searched).
* ``min_share``: components holding less than this share of the training utterances
  (hard assignment) are dropped, their members reassigned to the surviving component
  with the highest posterior.
* ``stages``: the plan name ``nhnn`` (default): stage 1 trains the shared DCNN, stage 2
  (a stage training only the ``heads`` group) fine-tunes the group heads. Write e.g.
  ``all-heads;heads@20*0.5`` for another epoch budget or lr factor of the group stage.
  The group stage replaces the DCNN (the model then predicts with the mixture of heads),
  so it selects among its own epochs with its own patience window, and the fold's best
  epoch and ``best_val_ua`` are the group stage's (``LATER_STAGES_REPLACE`` of the model;
  ``stage_selection`` may not be set to ``all``).

Named arms of paper 000 (``variants``; ``serray seeds nhnn --variant fc --variant
fc_conv``): ``fc`` and ``fc_conv``, the two freeze choices. Its other arms are models of
their own: ``dcnn``, ``mtl_cnn`` and ``cnn_lstm``.

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

__all__ = ["NHNN_CONFIG", "NHNN_ARMS", "FREEZE_CHOICES", "COVARIANCES", "STAGE_PLANS"]

#: Frozen-layer choices of the group stage (paper 000 sec. 5).
FREEZE_CHOICES: tuple[str, ...] = ("fc", "fc_conv")
#: ``covariance_type`` values of scikit-learn's mixtures.
COVARIANCES: tuple[str, ...] = ("full", "diag", "tied", "spherical")
#: Stage 1: the shared DCNN (everything but the heads); stage 2: only the group heads.
STAGE_PLANS: dict[str, str] = {"nhnn": "all-heads;heads"}

#: Paper 000's NHNN arms (sec. 5, Table 2) as named config overrides.
NHNN_ARMS: dict[str, dict[str, Any]] = {name: {"freeze": name} for name in FREEZE_CHOICES}

NHNN_CONFIG: dict[str, Any] = {
    **DCNN_CONFIG,
    "stages": "nhnn",
    "freeze": "fc",
    "max_components": 10,
    "dp_concentration": 0.1,
    "covariance": "diag",  # not the paper's full: too few utterances per component (nhnn_groups)
    "dp_reg_covar": 1e-3,
    "dp_max_iter": 500,
    "min_share": 0.1,
}

register(ModelSpec(
    name="nhnn", backend="torch",
    # the clustering input keeps its speaker differences: --normalize speaker standardises
    # it with the training part's statistics (paper 000's procedure, docs/models.md), not per speaker
    inputs={"x": InputSpec("sequence", ("mfb",)), "cluster": InputSpec("vector", ("egemaps",), speaker_norm=False)},
    default_config=NHNN_CONFIG,
    build=Lazy("serray.models.nhnn", "build"),
    description="dcnn + Dirichlet-process eGeMAPS groups with per-group heads, posterior-weighted (paper 000)",
    aux_labels={"gender": "gender", "speaker": "speaker"},
    stage_plans=STAGE_PLANS,
    variants=NHNN_ARMS,
    presets={"small": {**SMALL_SEQ, "channels": 32, "hidden": 32}},
    # after training each group's head gets the weights of its own best epoch on its own
    # validation utterances, so a search scores the finalized predictions, not an epoch's
    fitted_after_training=True,
))
