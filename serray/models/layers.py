"""Layers and losses shared by the torch families, and :class:`SERModule`, the contract's base.

* :func:`grad_scale` / :func:`grad_reverse`: identity forward, gradient times ``gamma``
  backward (gamma +1: multi-task, -1: domain-adversarial, 0: no gradient).
* :class:`CenterLoss`: learnable class centres (Wen et al. 2016; ADARL eq. 8).
* :func:`length_mask`, :func:`masked_mean`, :func:`masked_max`: pooling over valid frames.
* :func:`masked_cross_entropy`: cross-entropy over the samples whose label is known.
* :func:`emotion_cross_entropy`: the emotion term of every model's loss, weighted per class
  when the batch carries ``class_weights`` (training key ``class_weight=balanced``).
* :func:`mean_segment_logits`: an utterance's logits as the log of the mean softmax of its
  segments (the default of segment inputs).
* :class:`SERModule`: an ``nn.Module`` implementing :class:`serray.models.contract.SERModel`
  for single-input classifiers: ``forward_batch`` calls ``forward(x)`` or
  ``forward(x, lengths)``, the loss is the emotion cross-entropy, parameter groups are the
  top-level sub-modules (or the class's ``GROUPS``).

Example:
    >>> import torch
    >>> x = torch.ones(2, requires_grad=True)
    >>> grad_scale(x, -0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5]
    >>> masked_cross_entropy(torch.zeros(3, 2), torch.tensor([0, 1, -1]), torch.tensor([True, True, False])).item()
    0.6931471824645996
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serray.models.contract import Batch

__all__ = [
    "GradientScale",
    "grad_scale",
    "grad_reverse",
    "CenterLoss",
    "length_mask",
    "masked_mean",
    "masked_max",
    "masked_cross_entropy",
    "emotion_cross_entropy",
    "mean_segment_logits",
    "SERModule",
]


class GradientScale(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``scale`` going back."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return ctx.scale * grad, None


def grad_scale(x: Tensor, gamma: float) -> Tensor:
    """Gradient-scale layer: returns ``x``; the gradient flowing back is ``gamma`` times.

    ``gamma = 1`` is plain multi-task learning, ``gamma = -1`` a gradient-reversal
    (domain-adversarial) layer, ``gamma = 0`` cuts the gradient.
    """
    return GradientScale.apply(x, float(gamma))


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Gradient-reversal layer: ``grad_scale(x, -scale)`` with ``scale >= 0``.

    Raises:
        ValueError: A negative ``scale``.
    """
    if scale < 0:
        raise ValueError(f"grad_reverse: scale must be >= 0, got {scale}")
    return GradientScale.apply(x, -float(scale))


class CenterLoss(nn.Module):
    """Center loss: ``mean_i ||x_i - c_{y_i}||^2`` with learnable, Xavier-initialised centres.

    Args:
        n_classes: Number of classes (rows of :attr:`centers`).
        dim: Embedding size.
        lr_scale: Factor on the centres' gradient (their effective learning-rate factor).
    """

    def __init__(self, n_classes: int, dim: int, lr_scale: float = 1.0) -> None:
        super().__init__()
        if lr_scale < 0:
            raise ValueError(f"center_lr_scale must be >= 0, got {lr_scale}")
        self.centers = nn.Parameter(torch.empty(n_classes, dim))
        nn.init.xavier_uniform_(self.centers)
        self.lr_scale = float(lr_scale)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        centers = self.centers if self.lr_scale == 1.0 else GradientScale.apply(self.centers, self.lr_scale)
        return (x - centers[y]).pow(2).sum(dim=1).mean()


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean mask ``[B, max_len]``: True on valid frames.

    Example:
        >>> length_mask(torch.tensor([1, 3]), 3).tolist()
        [[True, False, False], [True, True, True]]
    """
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(h: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
    """Mean of ``h`` ``[B, C, T]`` over valid frames (``mask`` ``[B, 1, T]``) -> ``[B, C]``."""
    return (h * mask).sum(dim=2) / lengths.clamp(min=1).unsqueeze(1).to(h.dtype)


def masked_max(h: Tensor, mask: Tensor) -> Tensor:
    """Max of ``h`` ``[B, C, T]`` over valid frames (``mask`` ``[B, 1, T]``) -> ``[B, C]``."""
    return h.masked_fill(~mask, float("-inf")).amax(dim=2)


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean cross-entropy over the samples where ``mask`` is true (unknown labels left out).

    With every label known this is exactly ``F.cross_entropy(logits, target)``; with none
    known it is a zero that still belongs to the graph.
    """
    if mask is None or bool(mask.all()):
        return F.cross_entropy(logits, target)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], target[mask])


def emotion_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """The emotion cross-entropy of a model's loss, weighted per class when ``weight`` is set.

    Without weights this is exactly ``F.cross_entropy(logits, target, reduction=reduction)``;
    with ``weight`` (``batch.class_weights``) the mean is the weighted mean
    ``sum_i w[y_i] CE_i / sum_i w[y_i]`` (and ``sum`` the weighted sum).

    Example:
        >>> z, y = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
        >>> round(emotion_cross_entropy(z, y).item(), 4), round(emotion_cross_entropy(z, y, torch.tensor([1.0, 3.0])).item(), 4)
        (1.1269, 1.6269)
    """
    if weight is None:
        return F.cross_entropy(logits, target, reduction=reduction)
    return F.cross_entropy(logits, target, weight=weight.to(device=logits.device, dtype=logits.dtype), reduction=reduction)


def mean_segment_logits(logits: Tensor, owner: Tensor, n_utterances: int) -> Tensor:
    """``[n_utterances, C]``: log of the mean softmax over each utterance's segments.

    An utterance's probability is floored at 1e-12 before the log.

    Example:
        >>> out = mean_segment_logits(torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), torch.tensor([0, 0, 1]), 2)
        >>> [[round(p, 3) for p in row] for row in out.exp().tolist()]
        [[0.5, 0.5], [0.731, 0.269]]
    """
    probs = torch.softmax(logits, dim=1)
    owner = owner.to(probs.device)
    summed = torch.zeros((n_utterances, logits.shape[1]), dtype=probs.dtype, device=probs.device)
    summed.index_add_(0, owner, probs)
    counts = torch.bincount(owner, minlength=n_utterances).clamp(min=1).unsqueeze(1)
    return torch.log((summed / counts).clamp(min=1e-12))


class SERModule(nn.Module):
    """Base of serray's torch models: the :class:`~serray.models.contract.SERModel` defaults.

    Subclasses implement ``forward(x)`` or ``forward(x, lengths)`` returning a dict with
    ``"logits"``; they may set ``GROUPS`` (group name -> parameter-name prefixes) to name
    their parameter groups for training stages; by default each top-level sub-module with
    parameters is one group.
    """

    GROUPS: Mapping[str, tuple[str, ...]] | None = None

    def forward_batch(self, batch: Batch) -> dict[str, Tensor]:
        """Call the module on the primary input (with its lengths for sequences)."""
        return self(*batch.args())

    def loss(self, batch: Batch, outputs: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Emotion cross-entropy: ``(total, {"emotion": total})``."""
        ce = emotion_cross_entropy(outputs["logits"], batch.y, batch.class_weights)
        return ce, {"emotion": ce}

    def utterance_logits(self, batch: Batch, outputs: Mapping[str, Tensor]) -> Tensor:
        """Sample logits, or for segments :func:`mean_segment_logits` over ``batch.owner``."""
        logits = outputs["logits"].float()
        if batch.owner is None:
            return logits
        return mean_segment_logits(logits, batch.owner, batch.n_utterances)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Group -> parameter names; every parameter belongs to exactly one group.

        Raises:
            ValueError: ``GROUPS`` leaves a parameter out or claims one twice.
        """
        names = [n for n, _ in self.named_parameters()]
        if self.GROUPS is None:
            out: dict[str, list[str]] = {}
            for n in names:
                out.setdefault(n.split(".", 1)[0], []).append(n)
            return out
        out = {g: [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)] for g, prefixes in self.GROUPS.items()}
        claimed = [n for ns in out.values() for n in ns]
        if sorted(claimed) != sorted(names):
            missing = sorted(set(names) - set(claimed))
            twice = sorted({n for n in claimed if claimed.count(n) > 1})
            raise ValueError(f"{type(self).__name__}.GROUPS must cover every parameter once; missing {missing[:3]}, twice {twice[:3]}")
        return out
