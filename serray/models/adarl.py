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
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The configs live in the torch-free spec module (which registers the spec); re-exported here.
from serray.models.adarl_spec import ADARL_CONFIG as DEFAULT_CONFIG
from serray.models.adarl_spec import ADARL_REDUCED_PRESET as REDUCED_PRESET
from serray.models.adarl_spec import ADARL_VARIANTS as VARIANTS
from serray.models.contract import Batch, InputInfo
from serray.models.layers import CenterLoss, SERModule, emotion_cross_entropy, grad_reverse, masked_cross_entropy

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


def _pair(k: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(k, int):
        k = (k, k)
    k = tuple(int(v) for v in k)
    if len(k) != 2 or min(k) < 1:
        raise ValueError(f"{name} must be a positive int or a (freq, time) pair, got {k!r}")
    return k  # type: ignore[return-value]


class MultiScaleConv(nn.Module):
    """One multi-scale layer (eq. 10): two convolutions, concat, BN, ReLU, average pool.

    Args:
        in_channels: Input channels.
        out_channels: Output channels of *each* branch (the layer outputs twice this).
        kernel_sizes: Kernel size of the two branches (int or ``(freq, time)``); both use
            ``"same"`` padding.
        pool: Average-pooling kernel and stride (int or ``(freq, time)``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: tuple[int | Sequence[int], int | Sequence[int]],
        pool: int | Sequence[int],
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got in={in_channels}, out={out_channels}")
        k1, k2 = (_pair(k, "kernel size") for k in kernel_sizes)
        self.branch1 = nn.Conv2d(in_channels, out_channels, k1, padding="same", bias=False)
        self.branch2 = nn.Conv2d(in_channels, out_channels, k2, padding="same", bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)
        self.pool = nn.AvgPool2d(_pair(pool, "pool size"))
        for conv in (self.branch1, self.branch2):  # sec. 3.2: convolutions Xavier-initialised
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] -> [B, 2 * C_out, H // p_h, W // p_w]``."""
        y = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return self.pool(F.relu(self.bn(y)))


class ConvPathway(nn.Module):
    """A stack of :class:`MultiScaleConv` layers (one pathway's feature extractor).

    Args:
        in_channels: Input channels (spectrogram window lengths).
        channels: Per-branch output channels of each layer.
        kernel_sizes: The two branch kernel sizes of each layer.
        pools: Pool size of each layer.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_sizes: Sequence[tuple[int | Sequence[int], int | Sequence[int]]],
        pools: Sequence[int | Sequence[int]],
    ) -> None:
        super().__init__()
        if not (len(channels) == len(kernel_sizes) == len(pools)) or not channels:
            raise ValueError(
                f"channels, kernel sizes and pools need one entry per layer, got "
                f"{len(channels)}, {len(kernel_sizes)}, {len(pools)}"
            )
        layers = []
        c_in = in_channels
        for c, ks, p in zip(channels, kernel_sizes, pools):
            layers.append(MultiScaleConv(c_in, c, ks, p))
            c_in = 2 * c
        self.layers = nn.ModuleList(layers)
        self.out_channels = c_in

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, F, T] -> [B, C4, F4, T4]`` (the paper's ``F_4``)."""
        for layer in self.layers:
            x = layer(x)
        return x


class DomainAwareAttention(nn.Module):
    """Domain-aware attention layer (eq. 4): maps ``[B, C, H, W]`` to weights ``[B, H]``.

    Time pooling (mean over W), channel pooling (mean over C), FC(H, H // r), ReLU,
    FC(H // r, H), sigmoid.

    Its input is a mean of non-negative (ReLU, average-pooled) maps, nearly the same
    vector for every utterance, so with PyTorch's default uniform bias a hidden unit whose
    ``w . x + b`` is negative at initialisation is negative for every utterance: it never
    passes a gradient and stays dead. With all hidden units dead the weights are the
    constant ``sigmoid(fc2.bias)`` and the domain pathway cannot reach the emotion
    pathway (seen on EmoDB with the reduced preset's 2 hidden units, where the full model
    then gave logits bit-identical to the ``g1 = 0`` backbone). ``fc1_bias`` (default of
    the config key ``attention_fc1_bias``: 1.0) starts every hidden unit in ReLU's linear
    range, the usual remedy of a positive ReLU bias (Goodfellow et al., Deep Learning,
    sec. 6.3.1); ``None`` keeps PyTorch's default initialisation. The random draws are
    the same either way (the bias is overwritten after its draw).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> att = DomainAwareAttention(4, fc1_bias=1.0)
        >>> maps = torch.rand(5, 8, 4, 6)
        >>> weights = att(maps)
        >>> tuple(weights.shape), bool(((weights > 0) & (weights < 1)).all())
        ((5, 4), True)
        >>> dead_units(att.hidden(maps))
        0
    """

    def __init__(self, n_rows: int, reduction: int = 2, fc1_bias: float | None = 1.0) -> None:
        super().__init__()
        if n_rows < 1 or reduction < 1:
            raise ValueError(f"n_rows and reduction must be >= 1, got {n_rows}, {reduction}")
        hidden = max(1, n_rows // reduction)
        self.fc1 = nn.Linear(n_rows, hidden)
        self.fc2 = nn.Linear(hidden, n_rows)
        if fc1_bias is not None:
            with torch.no_grad():
                self.fc1.bias.fill_(float(fc1_bias))

    def hidden(self, maps: Tensor) -> Tensor:
        """Pre-activations of the hidden layer: ``[B, H // reduction]``."""
        return self.fc1(maps.mean(dim=3).mean(dim=1))  # TP then CP

    def weights_and_hidden(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """``(weights [B, H], hidden pre-activations [B, H // reduction])``."""
        hidden = self.hidden(maps)
        return torch.sigmoid(self.fc2(F.relu(hidden))), hidden

    def forward(self, maps: Tensor) -> Tensor:
        """Return one weight in ``(0, 1)`` per frequency row: ``[B, H]``."""
        return self.weights_and_hidden(maps)[0]


def dead_units(hidden: Tensor) -> int:
    """How many hidden units of the attention are <= 0 for every sample (no gradient at all)."""
    return int((hidden <= 0).all(dim=0).sum())


class DomainAwareEmbedding(nn.Module):
    """Domain-aware attention embedding (eq. 5): ``f_emb^k = diag(I_D) f^k`` for every channel k.

    Scales frequency row ``h`` of every channel by ``weights[:, h]``.
    """

    def forward(self, maps: Tensor, weights: Tensor) -> Tensor:
        """``maps [B, C, H, W]``, ``weights [B, H]`` -> ``[B, C, H, W]``."""
        if weights.shape != (maps.shape[0], maps.shape[2]):
            raise ValueError(f"weights must be [B, H] = {(maps.shape[0], maps.shape[2])}, got {tuple(weights.shape)}")
        return maps * weights[:, None, :, None]


class ChannelwiseFC(nn.Module):
    """Channel-wise FC over frequency (eq. 2): ``[B, C, H] -> [B, C]``, one FC(H, 1) per channel."""

    def __init__(self, channels: int, n_rows: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, n_rows))
        self.bias = nn.Parameter(torch.zeros(channels))
        bound = 1.0 / n_rows**0.5  # nn.Linear's default for FC(H, 1)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return (x * self.weight).sum(dim=-1) + self.bias


class _Head(nn.Module):
    """FC, ReLU, BN, dropout, FC (eq. 1 and 3); also returns the embedding.

    ``embedding="pre_bn"`` returns the FC + ReLU output, ``"post_bn"`` the BN output (the
    input of the last FC).
    """

    def __init__(self, in_dim: int, hidden: int, n_out: int, dropout: float, embedding: str = "pre_bn") -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, n_out)
        self.embedding = embedding

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, center-loss embedding, the last FC's input)``."""
        h = F.relu(self.fc1(x))
        z = self.bn(h)
        return self.fc2(self.dropout(z)), (h if self.embedding == "pre_bn" else z), z


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
        n_layers = len(conv_channels)
        if len(pool_sizes) != n_layers:
            raise ValueError(f"pool_sizes needs {n_layers} entries (one per layer), got {list(pool_sizes)}")
        k2 = kernel_sizes_second_branch
        if isinstance(k2, int) or (len(k2) == 2 and all(isinstance(v, int) for v in k2) and n_layers != 2):
            k2s: list[Any] = [k2] * n_layers
        else:
            k2s = list(k2)
            if len(k2s) != n_layers:
                raise ValueError(
                    f"kernel_sizes_second_branch must be one size or {n_layers} sizes, got {kernel_sizes_second_branch!r}"
                )
        kernels = [(kernel_size_first_branch, k) for k in k2s]

        self.variant = variant
        self.g1, self.g2, self.g3 = float(g1), float(g2), float(g3)
        self.grl_lambda = float(grl_lambda)
        self.n_classes, self.n_domains = int(n_classes), int(n_domains)
        c_in, f_in, t_in = (int(v) for v in in_shape)
        self.input_pool = (
            nn.AvgPool2d((int(freq_pool), int(time_pool))) if freq_pool > 1 or time_pool > 1 else nn.Identity()
        )

        # spatial size after the stack ("same" convolutions, floor pooling)
        h, w = f_in // int(freq_pool), t_in // int(time_pool)
        for p in pool_sizes:
            ph, pw = _pair(p, "pool size")
            h, w = h // ph, w // pw
        if h < 1 or w < 1:
            raise ValueError(
                f"input {tuple(in_shape)} with freq_pool={freq_pool}, time_pool={time_pool} is too small for "
                f"pool_sizes={list(pool_sizes)}: lower freq_pool/time_pool or the pool sizes"
            )
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

    def prepare(self, part: Any) -> None:
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


def average_features(feats: Tensor, owner: Tensor, n_utts: int) -> Tensor:
    """Mean of each utterance's segment features: ``[S, E]`` -> ``[n_utts, E]``.

    Example:
        >>> average_features(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), 2).tolist()
        [[2.0], [5.0]]
    """
    idx = owner.long().to(feats.device)
    sums = torch.zeros(n_utts, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, idx, feats)
    return sums / torch.bincount(idx, minlength=n_utts).clamp_min(1).unsqueeze(1).to(feats.dtype)


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


def average_segments(
    scores: Tensor,
    utt_index: Tensor,
    n_utts: int | None = None,
    *,
    inputs: Literal["logits", "probs"] = "logits",
) -> Tensor:
    """Utterance scores from segment scores: the mean of the segments' softmax probabilities.

    Args:
        scores: ``[S_total, C]`` segment logits (``inputs="logits"``, softmaxed first) or
            probabilities (``inputs="probs"``).
        utt_index: ``[S_total]`` integer utterance index (``0 .. n_utts - 1``) of each segment.
        n_utts: Number of utterances; default ``utt_index.max() + 1``.
        inputs: Whether ``scores`` are logits or probabilities.

    Returns:
        ``[n_utts, C]`` log of the mean segment probability: valid utterance logits
        (``softmax`` of them gives the mean probabilities back; ``argmax`` is the
        predicted class).

    Raises:
        ValueError: Bad shapes or indices, or an utterance without any segment.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
        >>> out = average_segments(logits, torch.tensor([0, 0, 1]))
        >>> [[round(p, 3) for p in row] for row in out.exp().tolist()]
        [[0.5, 0.5], [0.731, 0.269]]
    """
    if inputs not in ("logits", "probs"):
        raise ValueError(f"inputs must be 'logits' or 'probs', got {inputs!r}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be [segments, classes], got shape {tuple(scores.shape)}")
    if utt_index.dim() != 1 or utt_index.shape[0] != scores.shape[0]:
        raise ValueError(f"utt_index must be [{scores.shape[0]}] (one index per segment), got {tuple(utt_index.shape)}")
    if utt_index.dtype.is_floating_point or utt_index.dtype == torch.bool:
        raise ValueError(f"utt_index must be an integer tensor, got {utt_index.dtype}")
    if scores.shape[0] == 0:
        raise ValueError("average_segments: no segments given")
    if int(utt_index.min()) < 0:
        raise ValueError("utt_index must be >= 0")
    n = int(utt_index.max()) + 1 if n_utts is None else int(n_utts)
    if int(utt_index.max()) >= n:
        raise ValueError(f"utt_index has values >= n_utts={n}")
    probs = scores.softmax(dim=1) if inputs == "logits" else scores
    idx = utt_index.long().to(scores.device)
    sums = torch.zeros(n, scores.shape[1], dtype=probs.dtype, device=probs.device).index_add_(0, idx, probs)
    counts = torch.bincount(idx, minlength=n)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise ValueError(f"utterances without segments (first: {missing}); every index 0..{n - 1} needs one")
    mean = sums / counts.unsqueeze(1).to(probs.dtype)
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()


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
