"""Feature experts of paper 001 (sec. 4.1): one per input feature set.

* :class:`SequenceExpert`: Conv1d over time with filters of several widths (concatenated,
  ReLU), a BiLSTM, and attention pooling whose query is the BiLSTM's last hidden state
  and whose keys and values are its outputs (eq. 1-2:
  ``softmax(z W_Q (H W_K)^T / sqrt(d)) H W_V``), padded frames masked.
* :class:`VectorExpert`: an utterance vector passed through, or linearly projected.

Example:
    >>> import torch
    >>> e = SequenceExpert(5, conv=4, hidden=6, layers=1, att_dim=8)
    >>> out = e(torch.randn(3, 10, 5), torch.tensor([10, 4, 1]))
    >>> tuple(out.shape), e.out_dim
    ((3, 8), 8)
    >>> tuple(SequenceExpert(5, conv=4, hidden=6, att_dim=8, time_pool=3)(torch.randn(2, 10, 5), torch.tensor([10, 2])).shape)
    (2, 8)
    >>> VectorExpert(7).out_dim, VectorExpert(7, proj=3)(torch.ones(2, 7)).shape[1]
    (7, 3)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serray.models.layers import length_mask

__all__ = ["SequenceExpert", "VectorExpert", "attention_pool"]


def attention_pool(query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention of one query per sample over its valid frames (eq. 2).

    Args:
        query: ``[B, d]``; keys, values: ``[B, T, d]``; mask: ``[B, T]`` (True: valid).

    Returns:
        ``([B, d] pooled, [B, T] attention weights)``; weights are 0 on padded frames.

    Example:
        >>> q, k = torch.ones(1, 2), torch.tensor([[[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]]])
        >>> pooled, w = attention_pool(q, k, k, torch.tensor([[True, True, False]]))
        >>> [round(v, 3) for v in w[0].tolist()]
        [0.804, 0.196, 0.0]
    """
    scores = torch.einsum("bd,btd->bt", query, keys) / math.sqrt(query.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    return torch.einsum("bt,btd->bd", weights, values), weights


class SequenceExpert(nn.Module):
    """CNN + BiLSTM + attention pooling of a frame sequence (see the module docstring).

    Args:
        in_dim: Feature dimension per frame.
        conv: Filters per kernel width.
        hidden: BiLSTM hidden size per direction.
        layers: BiLSTM layers.
        att_dim: Width of the attention projections (the expert's output size).
        kernel_sizes: Conv1d widths (odd, so every frame keeps its position).
        time_pool: Average-pool the frames by this factor first (1: off; a CPU saving:
            the BiLSTM's cost is linear in the number of frames).
    """

    def __init__(self, in_dim: int, *, conv: int = 64, hidden: int = 128, layers: int = 1, att_dim: int = 256,
                 kernel_sizes: Sequence[int] = (3, 5), time_pool: int = 1) -> None:
        super().__init__()
        if time_pool < 1:
            raise ValueError(f"time_pool must be >= 1, got {time_pool}")
        self.time_pool = int(time_pool)
        if min(conv, hidden, layers, att_dim) < 1 or not kernel_sizes or any(int(k) % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"sequence expert: conv, hidden, layers, att_dim must be >= 1 and kernel_sizes odd, got "
                             f"{conv}, {hidden}, {layers}, {att_dim}, {list(kernel_sizes)}")
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, conv, int(k), padding=int(k) // 2) for k in kernel_sizes)
        self.lstm = nn.LSTM(conv * len(self.convs), hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.q = nn.Linear(2 * hidden, att_dim, bias=False)
        self.k = nn.Linear(2 * hidden, att_dim, bias=False)
        self.v = nn.Linear(2 * hidden, att_dim, bias=False)
        self.out_dim = att_dim

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x`` ``[B, T, D]`` zero-padded, ``lengths`` ``[B]`` -> ``[B, att_dim]``."""
        lengths = lengths.clamp(min=1)
        if self.time_pool > 1:  # a window's mean over its valid frames (padding is zero)
            p = self.time_pool
            valid = length_mask(lengths, x.shape[1]).unsqueeze(2).to(x.dtype)
            sums = F.avg_pool1d((x * valid).transpose(1, 2), p, p, ceil_mode=True) * p
            counts = F.avg_pool1d(valid.transpose(1, 2), p, p, ceil_mode=True) * p
            x = (sums / counts.clamp(min=1)).transpose(1, 2)
            lengths = (lengths + p - 1) // p
        mask = length_mask(lengths, x.shape[1])
        h = torch.cat([c(x.transpose(1, 2)) for c in self.convs], dim=1).relu()
        h = (h * mask.unsqueeze(1)).transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        last = torch.cat([h_n[-2], h_n[-1]], dim=1)  # last layer, forward and backward final states
        pooled, _ = attention_pool(self.q(last), self.k(out), self.v(out), mask)
        return pooled


class VectorExpert(nn.Module):
    """An utterance vector as it is (``proj=0``) or through ``Linear(in_dim, proj)``."""

    def __init__(self, in_dim: int, proj: int = 0) -> None:
        super().__init__()
        if proj < 0:
            raise ValueError(f"vec_proj must be >= 0, got {proj}")
        self.proj = nn.Linear(in_dim, proj) if proj else None
        self.out_dim = proj or in_dim

    def forward(self, x: Tensor) -> Tensor:
        """``[B, D]`` -> ``[B, out_dim]``."""
        return x if self.proj is None else self.proj(x)
