"""Class balance of training: the order of an epoch's samples and the class weights of the loss."""

from __future__ import annotations

import numpy as np

__all__ = ["SAMPLERS", "CLASS_WEIGHTS", "epoch_order", "class_weights"]

#: Values of the training key ``sampler`` (:func:`epoch_order`).
SAMPLERS: tuple[str, ...] = ("shuffle", "balanced")
#: Values of the training key ``class_weight`` (:func:`class_weights`).
CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced")


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Per-class weights of the emotion cross-entropy (training key ``class_weight``).

    ``none``: ``None`` (plain cross-entropy). ``balanced``: ``n / (C * n_c)`` from the
    labels ``y`` of the fold's training part (utterances; ``C`` the run's classes), so each
    class carries the same total weight; a class absent from the training part counts
    as one utterance (a finite weight it never uses there).

    Example:
        >>> class_weights(np.array([0, 0, 0, 1]), 2, "balanced").tolist()
        [0.6666666666666666, 2.0]

    Raises:
        ValueError: Unknown ``mode``.
    """
    if mode not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {mode!r}")
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1.0))


def epoch_order(y: np.ndarray, sampler: str, rng: np.random.Generator) -> np.ndarray:
    """The training samples of one epoch, in order: a permutation (``shuffle``), or as many
    draws with replacement, each class drawn with equal probability (``balanced``: every
    sample weighted by the inverse of its class count, as torch's ``WeightedRandomSampler``),
    so that small classes are seen as often as large ones.

    Example:
        >>> y = np.array([0] * 90 + [1] * 10)
        >>> sorted(epoch_order(y, "shuffle", np.random.default_rng(0))) == list(range(100))
        True
        >>> drawn = y[epoch_order(y, "balanced", np.random.default_rng(0))]
        >>> len(drawn), 35 < int((drawn == 1).sum()) < 65
        (100, True)
    """
    if sampler == "shuffle":
        return rng.permutation(len(y))
    if sampler != "balanced":
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    counts = np.bincount(y)
    weights = 1.0 / counts[y]
    return rng.choice(len(y), size=len(y), replace=True, p=weights / weights.sum())
