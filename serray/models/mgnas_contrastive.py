"""The GE2E-style centroid contrastive loss of paper 001 (sec. 4.2, eq. 3-6) and the
class-balanced mini-batches it needs.

Per batch: the embeddings are L2-normalised; only emotions with more than
``min_count`` samples in the batch take part; ``c_k`` is the mean of emotion ``k``'s
normalised embeddings (eq. 4); ``S_n,k = w cos(x_n, c_k) + b`` (eq. 3, ``w`` kept > 0);
each retained sample's loss is ``-log softmax_k(S_n)[y_n]`` (eq. 5) and the loss is
their **sum** (eq. 6: ``L_tot = L_CE + alpha sum L(x_ji)``).

Example:
    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 6 + [[1.0, 1.0]] * 2)
    >>> y = torch.tensor([0] * 6 + [1] * 6 + [2] * 2)
    >>> round(float(centroid_contrastive_loss(x, y, torch.tensor(10.0), torch.tensor(-5.0))), 4)
    0.0005
    >>> labels = np.array([0] * 9 + [1] * 4)
    >>> [np.bincount(labels[b]).tolist() for b in balanced_batches(labels, 4, 2, np.random.default_rng(0))]
    [[2, 2], [2, 2], [2, 2], [2, 2]]
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["centroid_contrastive_loss", "CentroidContrastiveLoss", "balanced_batches"]


def centroid_contrastive_loss(x: Tensor, y: Tensor, w: Tensor, b: Tensor, min_count: int = 5,
                              reduction: str = "sum") -> Tensor:
    """Sum over retained samples of ``-log softmax_k(w cos(x_n, c_k) + b)[y_n]`` (see the module docstring).

    Args:
        x: Embeddings ``[B, d]``.
        y: Emotion classes ``[B]``.
        w, b: Scale (clamped to >= 1e-6) and offset of the similarity.
        min_count: Emotions with ``<= min_count`` samples in the batch are left out (of
            the samples and of the centroids).
        reduction: ``"sum"`` (eq. 6) or ``"none"``: each sample's ``L(x_n)`` ``[B]``, 0
            for the samples left out (for a weight per sample, e.g. per domain).

    Returns:
        A scalar (``[B]`` with ``reduction="none"``); zero (still in the graph) when no
        emotion has enough samples.
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")
    classes, counts = torch.unique(y, return_counts=True)
    keep = classes[counts > min_count]
    if len(keep) == 0:
        return x.sum() * 0.0 if reduction == "sum" else x.sum(dim=1) * 0.0
    rows = (y.unsqueeze(1) == keep.unsqueeze(0))  # [B, N]: sample n belongs to kept emotion k
    member = rows.any(dim=1)
    z = F.normalize(x[member], dim=1)
    onehot = rows[member].to(z.dtype)  # [n, N]
    centroids = (onehot.t() @ z) / onehot.sum(dim=0).unsqueeze(1)  # eq. 4
    cos = F.normalize(z, dim=1) @ F.normalize(centroids, dim=1).t()
    s = w.clamp(min=1e-6) * cos + b  # eq. 3
    target = onehot.argmax(dim=1)
    if reduction == "sum":
        return F.cross_entropy(s, target, reduction="sum")  # eq. 5, summed as in eq. 6
    per = F.cross_entropy(s, target, reduction="none")
    return torch.zeros(len(y), dtype=per.dtype, device=per.device).masked_scatter(member, per)


class CentroidContrastiveLoss(nn.Module):
    """:func:`centroid_contrastive_loss` with learnable ``w`` (init 10) and ``b`` (init -5)."""

    def __init__(self, min_count: int = 5, w: float = 10.0, b: float = -5.0) -> None:
        super().__init__()
        if min_count < 1:
            raise ValueError(f"min_class_samples must be >= 1, got {min_count}")
        self.w = nn.Parameter(torch.tensor(float(w)))
        self.b = nn.Parameter(torch.tensor(float(b)))
        self.min_count = int(min_count)

    def forward(self, x: Tensor, y: Tensor, reduction: str = "sum") -> Tensor:  # noqa: D102
        return centroid_contrastive_loss(x, y, self.w, self.b, self.min_count, reduction)


def balanced_batches(y: np.ndarray, batch_size: int, per_class: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of class-balanced mini-batches: ``batch_size // per_class`` emotions each
    (all when fewer), ``per_class`` samples of each (all of an emotion with fewer).

    An epoch has ``ceil(len(y) / batch_size)`` batches. Each emotion's samples are drawn
    from its own reshuffled cycle, so small emotions are oversampled and every sample of
    an emotion is used before any is drawn again; the emotions of a batch are the ones
    drawn least often so far (ties at random), so they take turns.
    """
    y = np.asarray(y)
    if per_class < 1 or batch_size < 1:
        raise ValueError(f"samples_per_class and batch_size must be >= 1, got {per_class} and {batch_size}")
    classes = np.unique(y)
    pools = {c: np.flatnonzero(y == c) for c in classes}
    queues = {c: rng.permutation(pools[c]) for c in classes}
    pos = {c: 0 for c in classes}
    used = {c: 0 for c in classes}
    n_cls = min(len(classes), max(1, batch_size // per_class))
    out = []
    for _ in range(math.ceil(len(y) / batch_size)):
        ranked = sorted(classes, key=lambda c: (used[c], rng.random()))
        idx = []
        for c in ranked[:n_cls]:
            take = min(per_class, len(pools[c]))
            if pos[c] + take > len(queues[c]):
                queues[c], pos[c] = np.concatenate([queues[c][pos[c]:], rng.permutation(pools[c])]), 0
            idx.append(queues[c][pos[c] : pos[c] + take])
            pos[c] += take
            used[c] += 1
        out.append(rng.permutation(np.concatenate(idx)))
    return out
