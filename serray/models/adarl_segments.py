"""ADARL's segments to utterances: mean segment probabilities (utterance logits) and mean segment features."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["average_segments", "average_features"]


def average_features(feats: Tensor, owner: Tensor, n_utts: int) -> Tensor:
    """Mean of each utterance's segment features: ``[S, E]`` -> ``[n_utts, E]``.

    Example:
        >>> average_features(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), 2).tolist()
        [[2.0], [5.0]]
    """
    idx = owner.long().to(feats.device)
    sums = torch.zeros(n_utts, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, idx, feats)
    return sums / torch.bincount(idx, minlength=n_utts).clamp_min(1).unsqueeze(1).to(feats.dtype)



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
