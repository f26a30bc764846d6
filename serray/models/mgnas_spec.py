"""Spec of the multi-gating + NAS family (paper 001), torch-free; the model is :mod:`serray.models.mgnas`.

One expert per feature set: the input is *variadic*, so ``--features mfb+mfcc+egemaps``
gives three experts (roles ``mfb``, ``mfcc``, ``egemaps``), ``--features mfb+egemaps``
two and ``--features mfb+mfcc+lld+egemaps`` four; frame-level sets get sequence experts,
utterance vectors pass through (or are projected). ``NAME=SET`` names a role otherwise
(the older spelling ``seq1=lld+seq2=mfcc+vec=compare`` still works and gives roles
``seq1``, ``seq2``, ``vec``). The domain (config key ``domain``, CLI ``--domain COLUMN``)
is a manifest column such as ``language``; without one the model is the single-domain
model of the paper's sec. 4.1.

Example:
    >>> from serray.models import registry
    >>> from serray.training.spec import RunSpec
    >>> spec = registry.get("mgnas")
    >>> spec.default_features, RunSpec("W", "mgnas", features="mfb+lld+egemaps").feature_sets()
    (('mfb', 'mfcc', 'egemaps'), {'mfb': 'mfb', 'lld': 'lld', 'egemaps': 'egemaps'})
    >>> spec.aux_columns(spec.config()), spec.aux_columns(spec.config(overrides={"domain": "language"}))
    ({}, {'domain': 'language'})
    >>> spec.variants["mmoe"], spec.variants["alpha0"]  # the paper's arms (MGNAS_ARMS)
    ({'gating': 'mmoe'}, {'gating': 'none', 'alpha': 0.0, 'domain_alpha': {}})
"""

from __future__ import annotations

from typing import Any

from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["MGNAS_ARMS", "MGNAS_CONFIG", "MGNAS_SMALL_PRESET", "MGNAS_INPUTS", "GATING_MODES", "ACTIVATIONS"]

#: One variadic input: a role (and an expert) per named feature set, sequences or vectors.
MGNAS_INPUTS: dict[str, InputSpec] = {
    "experts": InputSpec("sequence", ("mfb", "mfcc", "egemaps"), other_kinds=("vector",), variadic=True),
}

#: ``none``: concatenated experts, one shared tower (the single-domain model / the
#: paper's Base); ``shared_bottom``: mean of the projected experts, a tower per domain;
#: ``omoe``: one softmax gate for all domains; ``mmoe``: a gate per domain; ``nas``: a gate
#: per domain over hard-concrete-connected experts (eq. 8-9).
GATING_MODES: tuple[str, ...] = ("none", "shared_bottom", "omoe", "mmoe", "nas")
#: The paper's comparison arms as named config overrides (``ModelSpec.variants``):
#: ``serray seeds mgnas --domain language --variant shared_tower --variant sb --variant omoe
#: --variant mmoe --variant nas`` trains Table 3's rows side by side (sec. 5.2.2);
#: ``shared_tower`` is the paper's *Base* (experts and tower shared, the domain unknown to
#: it; not named ``base``, the name of ``serray seeds``' default variant, so that a plain
#: run keeps its ``--set gating=``), ``sb`` the shared bottom, ``omoe`` one gate, ``mmoe`` a
#: gate per domain, ``nas`` theirs (per-domain gates over NAS-connected experts).
#: ``alpha0`` is Table 4's ablation: the single-domain model (sec. 4.1) without the
#: contrastive loss (compare with ``shared_tower``, or a plain run, without ``--domain``);
#: ``nas_alpha0`` the full multi-domain model without it (not in the paper).
MGNAS_ARMS: dict[str, dict[str, Any]] = {
    "shared_tower": {"gating": "none"},
    "sb": {"gating": "shared_bottom"},
    "omoe": {"gating": "omoe"},
    "mmoe": {"gating": "mmoe"},
    "nas": {"gating": "nas"},
    "alpha0": {"gating": "none", "alpha": 0.0, "domain_alpha": {}},
    "nas_alpha0": {"gating": "nas", "alpha": 0.0, "domain_alpha": {}},
}

#: Tower activations (``--set activations=mish+gelu``: first and second layer).
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu", "mish")

#: Paper settings (sec. 5.1; German/French tower: 512 units, Tanh + ReLU, alpha 0.01 for
#: German). Sequence experts: Conv1d with ``conv`` filters of each width in ``kernel_sizes``
#: (concatenated, ReLU), a BiLSTM (``layers``, ``hidden``), attention pooling of width
#: ``att_dim`` with the last hidden state as query. ``seq_experts`` sizes them: key
#: ``default`` for every sequence expert, a role name (``mfcc``) for one; the paper's
#: MFCC expert is smaller.
MGNAS_CONFIG: dict[str, Any] = {
    # training (sec. 5.1): AdamW, 20 epochs
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-5,
    "batch_size": 56,
    "epochs": 20,
    "patience": 0,  # 0: no early stop; the best validation epoch is still kept
    "samples_per_class": 8,  # class-balanced batches (batch_size // this classes each); 0: plain shuffle
    # experts
    "seq_experts": {"default": {"conv": 64, "hidden": 128, "layers": 1}, "mfcc": {"conv": 32, "hidden": 64, "layers": 2}},
    "kernel_sizes": [3, 5],
    "att_dim": 256,
    "time_pool": 1,  # average-pool the frames of every sequence expert by this factor first (CPU saving)
    "vec_proj": 0,  # single-domain: 0 passes the vector through; > 0 projects it to this width
    "proj_dim": 256,  # multi-domain modes: every expert is projected to this width
    # tower (one shared, or one per domain)
    "units": 512,
    "activations": "tanh+relu",
    "dropout": 0.1,
    # contrastive auxiliary loss (eq. 3-6)
    "alpha": 0.01,
    "domain_alpha": {},  # domain name -> alpha of its utterances (the paper's per-language alphas); others: alpha
    "min_class_samples": 5,  # emotions with more samples than this in a batch enter the loss
    # multi-domain (sec. 4.3)
    "domain": None,  # manifest column, e.g. language; None: one domain
    "gating": "none",
    "selector": "",  # input role driving the gates; "": the first vector role (eGeMAPS; GE2E in the paper), else the first
    "nas_beta": 0.9,
    "nas_gamma": -0.1,
    "nas_zeta": 2.0,
    # NAS sparsity (eq. 8-9 with Louizos et al.'s L0 objective; the paper gives no weight):
    # loss += l0_weight * sum P(xi_ij != 0). A gate closes (test-time xi exactly 0) once
    # sigmoid(log kappa) <= -gamma / (zeta - gamma), i.e. log kappa <= -3.0 for the paper's values.
    "nas_init": 0.0,  # initial log kappa (Louizos: drop rate 0.5 -> 0; test-time xi 0.95)
    "nas_lr_scale": 30.0,  # log kappa = nas_lr_scale * raw: the gates learn 30x faster than the weights
    "l0_weight": 0.05,  # per open connection; 0 keeps every connection (nothing ever closed)
    "domain_classes": True,  # a domain's tower never predicts emotions its training data lacks (gated modes;
    # gating=none, the Base, has one tower that does not know the domain)
}

#: CPU-sized preset: narrower experts and tower, frames average-pooled 4x (10 ms -> 40 ms
#: steps), training crops of 400 frames (4 s), 10 epochs. The experts are a quarter of the
#: paper's width; the MFCC expert keeps its own shape (half the filters and hidden units of
#: the others, 2 BiLSTM layers), as in the paper. (A preset replaces ``seq_experts`` as a
#: whole, so every role entry is listed here.)
MGNAS_SMALL_PRESET: dict[str, Any] = {
    "time_pool": 4,
    "seq_experts": {"default": {"conv": 16, "hidden": 32, "layers": 1}, "mfcc": {"conv": 8, "hidden": 16, "layers": 2}},
    "att_dim": 64,
    "proj_dim": 64,
    "units": 128,
    "epochs": 10,
    "max_frames": 400,
}

register(ModelSpec(
    name="mgnas", backend="torch",
    inputs=MGNAS_INPUTS,
    default_config=MGNAS_CONFIG,
    build=Lazy("serray.models.mgnas", "build"),
    description="paper 001: feature experts (CNN+BiLSTM+attention), centroid contrastive loss, per-domain gates, hard-concrete NAS",
    aux_labels={"domain": ""},
    presets={"small": MGNAS_SMALL_PRESET},
    variants=MGNAS_ARMS,
    stage_plans={"towers": "all;towers@5*0.1"},
))
