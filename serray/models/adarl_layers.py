"""Building blocks of ADARL (:mod:`serray.models.adarl`): multi-scale convolutions, the two
pathways' encoders, the domain-aware attention and embedding, the channel-wise FC and the heads."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MultiScaleConv",
    "ConvPathway",
    "DomainAwareAttention",
    "dead_units",
    "DomainAwareEmbedding",
    "ChannelwiseFC",
]


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

