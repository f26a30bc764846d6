"""ADARL: adaptive domain-aware representation learning (Fan et al., Interspeech 2021).

Two pathways of four multi-scale convolution layers read the same spectrogram segment.
The *domain* pathway classifies the domain (gender by default) and, through the
domain-aware attention layer (eq. 4), turns its fourth-layer maps into one weight in
``(0, 1)`` per frequency row. The weights rescale the rows of the *emotion* pathway's
fourth-layer maps (eq. 5) before time pooling, a channel-wise FC over frequency (eq. 2)
and two FC layers predict the emotion (eq. 3). Training minimises
``g1 * CE(domain) + g2 * CE(emotion) + g3 * center_loss(embedding)`` (eq. 6-9). The domain
label is only needed for the loss: ``forward(x)`` takes the spectrogram alone.

Variants (config key ``variant``, what is built):

* ``attention``: the full model above.
* ``emotion_only``: the emotion pathway alone; no domain pathway is built and the loss
  needs no domain labels (not a condition of the paper).
* ``adversarial``: the domain-invariant baseline of Table 3: one shared encoder feeds the
  emotion head and, through a gradient-reversal layer, a domain classifier.

The paper's Table 3 arms are named variants of the spec (``ModelSpec.variants``), so
``serray seeds adarl --variant adarl --variant backbone --variant adversarial`` trains
them side by side: ``adarl`` is ``variant=attention``; ``backbone`` is the paper's
ablation, ``variant=attention`` with ``g1=0`` ("we adjust the weight of the loss L_D ...
when lambda_1 = 0"): the domain pathway and the attention stay, the pathway only learns
from the emotion loss through the attention; ``adversarial`` is ``variant=adversarial``.

Kernel sizes (decision): Table 1 lists ``(3, 3)`` for every convolution of both pathways,
each layer with ``C_out = 16`` and the next with ``C_in = 32``, i.e. two 16-channel
branches of ``(3, 3)``. The text around eq. 10 calls the unit a multi-scale convolution
with "kernels of different scales" (after its reference [25]), but eq. 10 itself only
needs *different weights* ``w1, w2``, and Table 1 is the only place that gives sizes.
The default follows Table 1 (``kernel_sizes_second_branch: 3``; the layer then equals
one 32-channel ``(3, 3)`` convolution up to the Xavier initialisation's fan-out);
the text's reading is ``--set kernel_sizes_second_branch=5`` (one size, or one per layer).

Center loss (eq. 8): the class centres are an ``nn.Parameter`` (``[n_classes, E]``,
Xavier-initialised as in the paper) trained by the same optimiser as the network. The
gradient of ``g3 * L_cen`` with respect to centre ``c_j`` is
``-2 * g3 / N * sum_{i: y_i = j} (x_i - c_j)``, so each SGD step moves ``c_j`` toward the
mean embedding of class ``j`` in the batch; config key ``center_lr_scale`` multiplies
that gradient (an effective learning-rate factor for the centres; the optimiser's weight
decay and momentum still apply unscaled). The loss gradient also pulls the embeddings
toward their centres. The paper does not say which layer's output ``x_i`` is; by default
(``center_feature: pre_bn``) it is the emotion pathway's FC(64, 64) + ReLU output, before
the BN. On the BN output (``post_bn``, the input of the last FC) eq. 8 with the paper's
``g3 = 0.5`` dominated the loss in our EmoDB check (reduced preset, LOSO fold of speaker
11: test UA 0.30 with ``post_bn``, 0.54 with ``pre_bn``, 0.49 with ``g3 = 0``).

Utterance-level prediction (sec. 2.4) averages the softmax probabilities of an
utterance's 3 s segments: :func:`average_segments`.

Fold record (the paper's Table 4 analogue): after training, the L2 distance between the
domain centres (male vs female) of every emotion class in the feature space "before the
last fully connected layer" (the emotion head's BN output), computed on the fold's
*training* part (a LOSO test or validation part holds one speaker, hence one gender):
``domain_centre_distance`` (``l2`` and ``relative``, the L2 over the mean within-class
spread, since the arms' feature scales differ), one value per class in the run record's
class order. Utterance features are the mean of their segments'.

Defaults follow sec. 3.2 and Table 1 (SGD, lr 0.2 x 0.7 per epoch, weight decay 4e-5,
batch 32, 50 epochs, g1 = g2 = 1, g3 = 0.5, Xavier convolutions, 3 s segments of a
3 x 400 x 300 STFT input). Deliberate deviations, each with its reason:

* early stopping on the validation speaker(s) (``patience``): the paper trains 50
  epochs and reports the last; serray selects on validation data only, never on test;
* two STFT channels (20 and 40 ms windows, as sec. 2.4's text) where Table 1's first
  layer reads ``C_in = 3`` (the third channel is not described);
* log magnitudes floored 80 dB below the utterance maximum (feature ``spectrogram``,
  ``top_db``): without a floor, digital silence (zero padding, EmoDB's cut clips) gives
  ``log(eps)`` outliers that dominate the z-score;
* ``momentum: 0`` and ``dropout: 0`` (not stated) and ``center_feature: pre_bn`` (above);
* ``--preset reduced`` for CPUs (:data:`REDUCED_PRESET`: input pooled 4x in frequency
  and 2x in time, half the widths, 12 epochs): about 1/20 of the paper model's compute.

Small corpora (EmoDB 4-class LOSO, reduced preset, 8 epochs; README, ADARL). The paper's
3 s segments and per-epoch decay suit IEMOCAP (4.5 s utterances, ~170 steps per epoch).
Every file of the EmoDB copy here is 2.0 s, so a third of each 3 s segment is zero padding
(training warns when more than 20 % is; set the feature's ``segment_s``), and an epoch is
~9 steps, so at ``lr_decay`` 0.7 the model still improves when the lr has decayed. Pooled
UA: 65.8 +- 3.2 (3 seeds) as is, 70.0 +- 2.4 (5 seeds) with 2 s segments; with 3 s
segments, seed 0: 64.9 as is, 72.4 with 20 epochs at ``lr_decay`` 0.9, 71.1 with batch 8
at lr 0.1. Smaller batches (noisier batch-norm statistics) helped rather than hurt: the
limit is the number of steps, not batch norm on small folds.

Example:
    >>> import torch
    >>> from serray.models import registry
    >>> from serray.models.contract import InputInfo
    >>> spec = registry.get("adarl")
    >>> model = spec.build(spec.config(preset="reduced"), InputInfo((2, 400, 300), 4, 2))
    >>> out = model(torch.randn(3, 2, 400, 300))
    >>> tuple(out["logits"].shape), tuple(out["domain_logits"].shape)
    ((3, 4), (3, 2))
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import torch  # noqa: F401 (the docstring examples use it)
from torch import Tensor, nn

# The configs live in the torch-free spec module (which registers the spec); re-exported here.
from serray.models.adarl_layers import (
    ChannelwiseFC,
    ConvPathway,
    DomainAwareAttention,
    DomainAwareEmbedding,
    MultiScaleConv,
    _Head,
    _pair,
    dead_units,
)
from serray.models.adarl_segments import average_features, average_segments
from serray.models.adarl_spec import ADARL_CONFIG as DEFAULT_CONFIG
from serray.models.adarl_spec import ADARL_REDUCED_PRESET as REDUCED_PRESET
from serray.models.adarl_spec import ADARL_VARIANTS as VARIANTS
from serray.models.contract import Batch, InputInfo
from serray.models.layers import CenterLoss, SERModule, emotion_cross_entropy, grad_reverse, masked_cross_entropy

if TYPE_CHECKING:  # the training package imports the models, not the other way round
    from serray.training.data import SplitData

__all__ = [
    "ADARL",
    "VARIANTS",
    "DEFAULT_CONFIG",
    "REDUCED_PRESET",
    "grad_reverse",
    "MultiScaleConv",
    "ConvPathway",
    "DomainAwareAttention",
    "attention_summary",
    "dead_units",
    "DomainAwareEmbedding",
    "ChannelwiseFC",
    "CenterLoss",
    "average_segments",
    "average_features",
    "domain_centre_distances",
    "build",
]

logger = logging.getLogger(__name__)

Variant = Literal["attention", "emotion_only", "adversarial"]


class ADARL(SERModule):
    """ADARL model and its ``emotion_only`` / ``adversarial`` variants (``g1 = 0``: the backbone).

    Args:
        in_shape: One segment's shape ``(C, F, T)``.
        n_classes: Emotion classes.
        n_domains: Domain classes (>= 2 unless ``variant == "emotion_only"``).
        variant: ``"attention"``, ``"emotion_only"`` or ``"adversarial"``.
        g1, g2, g3: Loss weights of domain CE, emotion CE and center loss (eq. 9).
        kernel_size_first_branch: Kernel of the first branch of every layer (int or pair).
        kernel_sizes_second_branch: Kernel of the second branch: one int/pair for all
            layers or one per layer.
        conv_channels: Per-branch output channels of each convolution layer.
        pool_sizes: Average-pool size of each layer.
        embedding_dim: Width of the FC layer before each classifier.
        attention_reduction: Hidden size of the attention MLP is ``F4 // reduction``.
        attention_fc1_bias: Initial bias of the attention's hidden units (``None``:
            PyTorch's default); see :class:`DomainAwareAttention`.
        dropout: Dropout before the last FC layers.
        center_lr_scale: Gradient factor of the class centres.
        grl_lambda: Gradient-reversal factor (``adversarial`` only).
        center_feature: Embedding the center loss clusters: ``"pre_bn"`` (emotion FC +
            ReLU output) or ``"post_bn"`` (after the BN, the input of the last FC).
        freq_pool: Average-pool the input along frequency by this factor first.
        time_pool: Average-pool the input along time by this factor first.

    Raises:
        ValueError: A bad argument, or an input too small for the pooling stack.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        n_domains: int = 0,
        *,
        variant: Variant = "attention",
        g1: float = 1.0,
        g2: float = 1.0,
        g3: float = 0.5,
        kernel_size_first_branch: int | Sequence[int] = 3,
        kernel_sizes_second_branch: int | Sequence[int] | Sequence[Sequence[int]] = 3,
        conv_channels: Sequence[int] = (16, 16, 16, 32),
        pool_sizes: Sequence[int | Sequence[int]] = (2, 2, 2, 6),
        embedding_dim: int = 64,
        attention_reduction: int = 2,
        attention_fc1_bias: float | None = 1.0,
        dropout: float = 0.0,
        center_lr_scale: float = 1.0,
        grl_lambda: float = 1.0,
        center_feature: Literal["pre_bn", "post_bn"] = "pre_bn",
        freq_pool: int = 1,
        time_pool: int = 1,
    ) -> None:
        super().__init__()
        _check_arguments(in_shape, n_classes, n_domains, variant, (g1, g2, g3), center_feature, dropout,
                         freq_pool, time_pool, embedding_dim)
        kernels = _layer_kernels(kernel_size_first_branch, kernel_sizes_second_branch, len(conv_channels), pool_sizes)

        self.variant = variant
        self.g1, self.g2, self.g3 = float(g1), float(g2), float(g3)
        self.grl_lambda = float(grl_lambda)
        self.n_classes, self.n_domains = int(n_classes), int(n_domains)
        c_in = int(in_shape[0])
        self.input_pool = (
            nn.AvgPool2d((int(freq_pool), int(time_pool))) if freq_pool > 1 or time_pool > 1 else nn.Identity()
        )

        h, w = _pooled_size(in_shape, freq_pool, time_pool, pool_sizes)
        self.feature_shape = (2 * int(conv_channels[-1]), h, w)
        c4 = self.feature_shape[0]

        self.emotion_encoder = ConvPathway(c_in, conv_channels, kernels, pool_sizes)
        self.emotion_head = _Head(c4, embedding_dim, n_classes, dropout, center_feature)  # after TP + CFC
        self.cfc = ChannelwiseFC(c4, h)
        self.center_loss = CenterLoss(n_classes, embedding_dim, center_lr_scale)
        self.domain_encoder: ConvPathway | None = None
        self.domain_head: _Head | None = None
        self.attention: DomainAwareAttention | None = None
        self.embed: DomainAwareEmbedding | None = None
        if variant == "attention":
            self.domain_encoder = ConvPathway(c_in, conv_channels, kernels, pool_sizes)
            self.attention = DomainAwareAttention(h, attention_reduction, attention_fc1_bias)
            self.embed = DomainAwareEmbedding()
        if variant != "emotion_only":
            self.domain_head = _Head(c4 * h * w, embedding_dim, n_domains, dropout)
        self._train_domain: Any = None
        self._record: dict[str, Any] = {}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Segment batch ``[B, C, F, T]`` -> dict.

        Keys: ``logits`` ``[B, n_classes]``, ``embedding`` ``[B, E]`` (the center-loss
        feature), ``features`` ``[B, E]`` (the last FC's input, for the fold record),
        ``domain_logits`` ``[B, n_domains]`` (not for ``emotion_only``) and
        ``attention`` ``[B, F4]`` (``attention`` variant only).
        """
        if x.dim() != 4:
            raise ValueError(f"ADARL expects [batch, channels, freq, time], got shape {tuple(x.shape)}")
        x = self.input_pool(x.to(self.cfc.weight.dtype))  # features may be stored as float16
        out: dict[str, Tensor] = {}
        maps = self.emotion_encoder(x)
        if self.variant == "attention":
            assert self.domain_encoder is not None and self.attention is not None and self.embed is not None
            assert self.domain_head is not None
            d_maps = self.domain_encoder(x)
            out["domain_logits"] = self.domain_head(d_maps.flatten(1))[0]
            weights, out["attention_hidden"] = self.attention.weights_and_hidden(d_maps)
            out["attention"] = weights
            maps = self.embed(maps, weights)
        elif self.variant == "adversarial":
            assert self.domain_head is not None
            out["domain_logits"] = self.domain_head(grad_reverse(maps, self.grl_lambda).flatten(1))[0]
        out["logits"], out["embedding"], out["features"] = self.emotion_head(self.cfc(maps.mean(dim=3)))
        return out

    def loss(self, batch: Batch, out: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``g1 * CE(domain) + g2 * CE(emotion) + g3 * center loss`` for one mini-batch (eq. 9).

        Returns ``(total, parts)`` with the unweighted terms ``emotion``, ``center`` and
        ``domain``. Terms whose weight is 0 are skipped (so they send no gradient at all).
        Samples whose domain is unknown (``batch.aux_mask["domain"]``) are left out of
        the domain term.

        Raises:
            ValueError: No domain labels for a variant with a domain classifier.
        """
        y = batch.y
        ce = emotion_cross_entropy(out["logits"], y, batch.class_weights)
        parts = {"emotion": ce}
        total = self.g2 * ce
        if self.g3 > 0:
            parts["center"] = self.center_loss(out["embedding"], y)
            total = total + self.g3 * parts["center"]
        if self.variant != "emotion_only" and self.g1 > 0:
            if "domain" not in batch.aux:
                raise ValueError(
                    f"ADARL variant {self.variant!r} needs domain labels; the config key 'domain' names "
                    "the manifest column (e.g. gender), or use g1=0 or variant 'emotion_only'"
                )
            parts["domain"] = masked_cross_entropy(out["domain_logits"], batch.aux["domain"], batch.aux_mask.get("domain"))
            total = total + self.g1 * parts["domain"]
        return total, parts

    def prepare(self, part: SplitData) -> None:
        """Trainer hook: keep the training utterances' domain codes for :meth:`after_training`."""
        self._train_domain = None if part.domain is None else np.asarray(part.domain).copy()

    def after_training(self, batch: Batch, outputs: Mapping[str, Tensor]) -> None:
        """Trainer hook: the domain-centre distances of the training part (module docstring)."""
        self._record = {}
        if self._train_domain is None or "features" not in outputs or batch.y is None:
            return
        feats = outputs["features"].detach().float()
        if batch.owner is not None:  # segments -> utterance means
            feats = average_features(feats, batch.owner, batch.n_utterances)
        dist = domain_centre_distances(feats.cpu().numpy(), batch.y.cpu().numpy(), self._train_domain, self.n_classes)
        if dist is not None:  # one value per class; the report names them from the run's classes
            self._record = {"domain_centre_distance": dist, "axis_names": {"domain_centre_distance": "classes"}}
        if "attention" in outputs:
            self._record["attention"] = attention_summary(outputs["attention"], outputs["attention_hidden"])

    def fold_record(self) -> dict[str, Any]:
        """Trainer hook: what :meth:`after_training` measured (JSON-able)."""
        return dict(self._record)


def _check_arguments(
    in_shape: Sequence[int], n_classes: int, n_domains: int, variant: str, weights: tuple[float, float, float],
    center_feature: str, dropout: float, freq_pool: int, time_pool: int, embedding_dim: int,
) -> None:
    """Refuse a bad :class:`ADARL` argument with one clear line (``weights``: g1, g2, g3)."""
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"in_shape must be (channels, freq, time), got {tuple(in_shape)}")
    if variant == "backbone":
        raise ValueError(
            "adarl variant 'backbone' is gone: the paper's backbone (Table 3) is variant 'attention' with g1=0 "
            "(serray seeds --variant backbone); the pathway-free network is variant 'emotion_only'"
        )
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if variant != "emotion_only" and n_domains < 2:
        raise ValueError(
            f"variant {variant!r} needs >= 2 domain classes (InputInfo.n_domains), got {n_domains}; "
            "set a domain column with two or more values or use variant 'emotion_only'"
        )
    g1, g2, g3 = weights
    if min(g1, g2, g3) < 0:
        raise ValueError(f"loss weights g1, g2, g3 must be >= 0, got {g1}, {g2}, {g3}")
    if center_feature not in ("pre_bn", "post_bn"):
        raise ValueError(f"center_feature must be 'pre_bn' or 'post_bn', got {center_feature!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    for key, val in (("freq_pool", freq_pool), ("time_pool", time_pool)):
        if int(val) != val or val < 1:
            raise ValueError(f"{key} must be a positive int, got {val!r}")
    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")


def _layer_kernels(
    first: int | Sequence[int], second: int | Sequence[int] | Sequence[Sequence[int]], n_layers: int,
    pool_sizes: Sequence[int | Sequence[int]],
) -> list[tuple[Any, Any]]:
    """``(first branch kernel, second branch kernel)`` of every layer (``second``: one size or one per layer)."""
    if len(pool_sizes) != n_layers:
        raise ValueError(f"pool_sizes needs {n_layers} entries (one per layer), got {list(pool_sizes)}")
    if isinstance(second, int) or (len(second) == 2 and all(isinstance(v, int) for v in second) and n_layers != 2):
        k2s: list[Any] = [second] * n_layers
    else:
        k2s = list(second)
        if len(k2s) != n_layers:
            raise ValueError(f"kernel_sizes_second_branch must be one size or {n_layers} sizes, got {second!r}")
    return [(first, k) for k in k2s]


def _pooled_size(
    in_shape: Sequence[int], freq_pool: int, time_pool: int, pool_sizes: Sequence[int | Sequence[int]]
) -> tuple[int, int]:
    """``(freq, time)`` size of the maps after the stack ("same" convolutions, floor pooling)."""
    h, w = int(in_shape[1]) // int(freq_pool), int(in_shape[2]) // int(time_pool)
    for p in pool_sizes:
        ph, pw = _pair(p, "pool size")
        h, w = h // ph, w // pw
    if h < 1 or w < 1:
        raise ValueError(
            f"input {tuple(in_shape)} with freq_pool={freq_pool}, time_pool={time_pool} is too small for "
            f"pool_sizes={list(pool_sizes)}: lower freq_pool/time_pool or the pool sizes"
        )
    return h, w


def attention_summary(weights: Tensor, hidden: Tensor) -> dict[str, Any]:
    """Fold-record summary of the attention on the training segments: per frequency row the
    mean and the spread (std) of its weight, and how many hidden units never fire.

    ``dead_units == hidden_units`` means constant weights: the domain pathway then cannot
    change the emotion pathway (a warning is logged).

    Example:
        >>> s = attention_summary(torch.tensor([[0.2, 0.8], [0.4, 0.8]]), torch.tensor([[1.0, -1.0], [0.5, -2.0]]))
        >>> s["weights_mean"], s["dead_units"], s["hidden_units"]
        ([0.3, 0.8], 1, 2)
    """
    w, h = weights.detach().float(), hidden.detach().float()
    dead = dead_units(h)
    summary = {
        "weights_mean": [round(float(v), 6) for v in w.mean(dim=0)],
        "weights_std": [round(float(v), 6) for v in w.std(dim=0, unbiased=False)],
        "dead_units": dead,
        "hidden_units": int(h.shape[1]),
    }
    if dead == h.shape[1]:
        logger.warning(
            "adarl: every hidden unit of the domain-aware attention is dead (%d of %d): its weights are constant "
            "and the domain pathway does not reach the emotion pathway; raise attention_fc1_bias", dead, h.shape[1]
        )
    return summary


def domain_centre_distances(feats: np.ndarray, y: np.ndarray, domain: np.ndarray, n_classes: int) -> dict[str, list[float]] | None:
    """Per class: the L2 distance between the centres of two domains (Table 4 of paper 004).

    With more than two domains, the mean distance over domain pairs. ``relative`` divides
    it by the class's within-domain spread (RMS distance of a sample to its domain centre),
    which makes feature spaces of different scales comparable. A class lacking a domain
    gets NaN; ``None`` when fewer than two domains are known at all.

    Example:
        >>> f = np.array([[0.0], [2.0], [4.0], [6.0]])
        >>> domain_centre_distances(f, np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1]), 1)
        {'l2': [4.0], 'relative': [4.0]}
    """
    known = domain >= 0
    domains = np.unique(domain[known])
    if len(domains) < 2:
        return None
    l2, rel = [], []
    for c in range(n_classes):
        groups = [feats[(y == c) & (domain == d)] for d in domains]
        if any(len(g) == 0 for g in groups):
            l2.append(float("nan"))
            rel.append(float("nan"))
            continue
        centres = [g.mean(axis=0) for g in groups]
        pairs = [(i, j) for i in range(len(centres)) for j in range(i + 1, len(centres))]
        d = float(np.mean([np.linalg.norm(centres[i] - centres[j]) for i, j in pairs]))
        spread = float(np.sqrt(np.mean(np.concatenate([((g - m) ** 2).sum(axis=1) for g, m in zip(groups, centres)]))))
        l2.append(d)
        rel.append(d / spread if spread > 0 else float("nan"))
    return {"l2": l2, "relative": rel}


_MODEL_KEYS = (
    "variant",
    "g1",
    "g2",
    "g3",
    "kernel_size_first_branch",
    "kernel_sizes_second_branch",
    "conv_channels",
    "pool_sizes",
    "embedding_dim",
    "attention_reduction",
    "attention_fc1_bias",
    "dropout",
    "center_lr_scale",
    "grl_lambda",
    "center_feature",
    "freq_pool",
    "time_pool",
)


def build(config: Mapping[str, Any], info: InputInfo) -> ADARL:
    """Build an :class:`ADARL` from a config (see :data:`DEFAULT_CONFIG`) and the input info.

    Raises:
        ValueError: A missing model key or a bad value.
    """
    missing = [k for k in _MODEL_KEYS if k not in config]
    if missing:
        raise ValueError(f"adarl config lacks {missing}; start from registry.get('adarl').config()")
    kwargs = {k: config[k] for k in _MODEL_KEYS}
    for key in ("embedding_dim", "attention_reduction", "freq_pool", "time_pool"):
        kwargs[key] = int(kwargs[key])
    for key in ("g1", "g2", "g3", "dropout", "center_lr_scale", "grl_lambda"):
        kwargs[key] = float(kwargs[key])
    if kwargs["attention_fc1_bias"] is not None:
        kwargs["attention_fc1_bias"] = float(kwargs["attention_fc1_bias"])
    kwargs["conv_channels"] = [int(c) for c in kwargs["conv_channels"]]
    model = ADARL(info.shape, info.n_classes, info.n_domains, **kwargs)
    logger.debug(
        "built adarl (%s) for input %s: layer-4 maps %s, %d parameters",
        model.variant,
        info.shape,
        model.feature_shape,
        sum(p.numel() for p in model.parameters()),
    )
    return model
