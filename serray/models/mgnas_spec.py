"""Spec of the multi-gating + NAS family (paper 001), torch-free; the model is :mod:`serray.models.mgnas`.

Three named inputs, one expert each: ``seq1`` and ``seq2`` (frame sequences, default
``mfb`` and ``mfcc``) and ``vec`` (an utterance vector, default ``egemaps``), so
``--features mfb+mfcc+egemaps`` (or ``seq1=lld+seq2=mfcc+vec=compare``) names them. The
domain (config key ``domain``, CLI ``--domain COLUMN``) is a manifest column such as
``language``; without one the model is the single-domain model of the paper's sec. 4.1.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("mgnas")
    >>> list(spec.inputs), spec.default_features
    (['seq1', 'seq2', 'vec'], ('mfb', 'mfcc', 'egemaps'))
    >>> spec.aux_columns(spec.config()), spec.aux_columns(spec.config(overrides={"domain": "language"}))
    ({}, {'domain': 'language'})
"""

from __future__ import annotations

from typing import Any

from serray.models.contract import InputSpec
from serray.models.registry import Lazy, ModelSpec, register

__all__ = ["MGNAS_CONFIG", "MGNAS_SMALL_PRESET", "MGNAS_INPUTS", "GATING_MODES", "ACTIVATIONS"]

#: Input roles, one expert each (the first is the primary input).
MGNAS_INPUTS: dict[str, InputSpec] = {
    "seq1": InputSpec("sequence", ("mfb",)),
    "seq2": InputSpec("sequence", ("mfcc",)),
    "vec": InputSpec("vector", ("egemaps",)),
}

#: ``none``: concatenated experts, one shared tower (the single-domain model / the
#: paper's Base); ``shared_bottom``: mean of the projected experts, a tower per domain;
#: ``omoe``: one softmax gate for all domains; ``mmoe``: a gate per domain; ``nas``: a gate
#: per domain over hard-concrete-connected experts (eq. 8-9).
GATING_MODES: tuple[str, ...] = ("none", "shared_bottom", "omoe", "mmoe", "nas")
#: Tower activations (``--set activations=mish+gelu``: first and second layer).
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu", "mish")

#: Paper settings (sec. 5.1; German/French tower: 512 units, Tanh + ReLU, alpha 0.01 for
#: German). Sequence experts: Conv1d with ``conv`` filters of each width in ``kernel_sizes``
#: (concatenated, ReLU), a BiLSTM (``layers``, ``hidden``), attention pooling of width
#: ``att_dim`` with the last hidden state as query; the MFCC expert (``seq2``) is smaller.
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
    "seq_experts": {"seq1": {"conv": 64, "hidden": 128, "layers": 1}, "seq2": {"conv": 32, "hidden": 64, "layers": 2}},
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
    "min_class_samples": 5,  # emotions with more samples than this in a batch enter the loss
    # multi-domain (sec. 4.3)
    "domain": None,  # manifest column, e.g. language; None: one domain
    "gating": "none",
    "selector": "vec",  # input role driving the gates (eGeMAPS by default; GE2E in the paper)
    "nas_beta": 0.9,
    "nas_gamma": -0.1,
    "nas_zeta": 2.0,
    "nas_init": 1.0,  # initial log kappa of every connection (eval gate 1 for > 0.05)
    "l0_weight": 0.0,  # weight of the expected number of open NAS connections
    "domain_classes": True,  # a domain's tower never predicts emotions its training data lacks
}

#: CPU-sized preset: narrower experts and tower, frames average-pooled 4x (10 ms -> 40 ms
#: steps), training crops of 400 frames (4 s), 10 epochs.
MGNAS_SMALL_PRESET: dict[str, Any] = {
    "time_pool": 4,
    "seq_experts": {"seq1": {"conv": 16, "hidden": 32, "layers": 1}, "seq2": {"conv": 16, "hidden": 32, "layers": 1}},
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
    stage_plans={"towers": "all;towers@5*0.1"},
))
