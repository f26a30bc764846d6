"""Late-fusion rules, the float64 reference: fused predictions of a subset and its UA/WA.

See :mod:`serray.ensemble.search` for the rules (``logits``, ``prob``, ``vote``) and their
tie-breaking; the search's vectorised evaluator reproduces these predictions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from serray.ensemble.members import Members, _check_choice
from serray.metrics import batched_ua

__all__ = ["FUSIONS", "fused_predictions", "evaluate_subset"]

FUSIONS: tuple[str, ...] = ("logits", "prob", "vote")


def _softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _vote_argmax(votes: np.ndarray, summed: np.ndarray) -> np.ndarray:
    """Class with most votes; ties by larger summed logit, then lower index."""
    best = votes.max(axis=-1, keepdims=True)
    return np.where(votes == best, summed, -np.inf).argmax(axis=-1)


def fused_predictions(members: Members, subset: Sequence[int], split: str, fusion: str = "logits") -> np.ndarray:
    """Fused class predictions of a subset (repeats allowed: a repeated member counts twice).

    This is the plain float64 reference implementation; the search engine's vectorised
    evaluator reproduces it.

    Args:
        members: The members.
        subset: Member indices.
        split: ``"validation"`` or ``"test"``.
        fusion: ``"logits"``, ``"prob"`` or ``"vote"``.

    Returns:
        int64 predictions ``[N]``.
    """
    _check_choice("fusion", fusion, FUSIONS)
    idx = [int(i) for i in subset]
    if not idx:
        raise ValueError("subset is empty")
    if min(idx) < 0 or max(idx) >= members.n_members:
        raise ValueError(f"subset indices must lie in [0, {members.n_members})")
    logits, _ = members.split(split)
    sel = logits[idx]
    if fusion == "logits":
        return sel.astype(np.float64).sum(axis=0).argmax(axis=-1)
    if fusion == "prob":
        return _softmax64(sel).sum(axis=0).argmax(axis=-1)
    votes = np.zeros(sel.shape[1:], dtype=np.int64)
    rows = np.arange(sel.shape[1])
    for m in range(sel.shape[0]):
        np.add.at(votes, (rows, sel[m].argmax(axis=-1)), 1)
    return _vote_argmax(votes, sel.astype(np.float64).sum(axis=0))


def evaluate_subset(members: Members, subset: Sequence[int], fusion: str = "logits") -> dict[str, float]:
    """UA and WA of a subset's fused prediction on validation and test.

    Returns:
        ``{"val_ua", "val_wa", "test_ua", "test_wa"}``.
    """
    out = {}
    for split, key in (("validation", "val"), ("test", "test")):
        _, y = members.split(split)
        pred = fused_predictions(members, subset, split, fusion)
        out[f"{key}_ua"] = float(batched_ua(y, pred[None, :], members.n_classes)[0])
        out[f"{key}_wa"] = float(np.mean(pred == y))
    return out
