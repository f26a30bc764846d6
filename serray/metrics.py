"""Classification metrics used across serray: UA (UAR), WA, macro F1, confusion matrices.

UA (unweighted average recall, a.k.a. UAR or balanced accuracy) is the primary SER
metric: the mean of the per-class recalls over the classes present in ``y_true``.
WA (weighted accuracy) is plain accuracy. All functions accept string or integer labels.

The batched variants score many prediction vectors against one label vector in a single
array operation; the ensemble search uses them.

Example:
    >>> y_true = ["ang", "ang", "neu", "sad"]
    >>> y_pred = ["ang", "neu", "neu", "neu"]
    >>> round(unweighted_average_recall(y_true, y_pred), 4)
    0.5
    >>> weighted_accuracy(y_true, y_pred)
    0.5
    >>> import numpy as np
    >>> batched_ua(np.array([0, 0, 1]), np.array([[0, 0, 1], [1, 1, 1]]), n_classes=2).tolist()
    [1.0, 0.5]
"""

from __future__ import annotations

import logging
from typing import Any, Hashable, Sequence

import numpy as np

__all__ = [
    "unweighted_average_recall",
    "weighted_accuracy",
    "macro_f1",
    "confusion",
    "per_class_recall",
    "per_group_ua",
    "summary",
    "ua_from_counts",
    "batched_ua",
    "batched_ua_torch",
]

log = logging.getLogger(__name__)


def _as_1d(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _encode(
    y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None
) -> tuple[np.ndarray, np.ndarray, list]:
    """Map labels to integer codes ``0..C-1`` in the order of ``labels``.

    When ``labels`` is None the sorted union of both label vectors is used. Values of
    ``y_true``/``y_pred`` not in ``labels`` get the code ``-1``.
    """
    t = _as_1d("y_true", y_true)
    p = _as_1d("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
    if labels is None:
        labels = sorted(set(t.tolist()) | set(p.tolist()))
    else:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels contains duplicates: {labels}")
    lut = {lab: i for i, lab in enumerate(labels)}
    ti = np.fromiter((lut.get(v, -1) for v in t.tolist()), dtype=np.int64, count=t.shape[0])
    pi = np.fromiter((lut.get(v, -1) for v in p.tolist()), dtype=np.int64, count=p.shape[0])
    return ti, pi, labels


def _class_counts(
    y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Per-class true positives, true counts (support) and predicted counts.

    Samples whose label lies outside ``labels`` still count as misses / false positives
    of the classes that are scored (scikit-learn's convention with ``labels=``).
    """
    ti, pi, labs = _encode(y_true, y_pred, labels)
    c = len(labs)
    tp = np.bincount(ti[(ti == pi) & (ti >= 0)], minlength=c)
    support = np.bincount(ti[ti >= 0], minlength=c)
    predicted = np.bincount(pi[pi >= 0], minlength=c)
    return tp, support, predicted, labs


def confusion(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> np.ndarray:
    """Confusion matrix; rows are true classes, columns predicted classes.

    Args:
        y_true: True labels (strings or integers).
        y_pred: Predicted labels, same length.
        labels: Class order of the rows/columns; default the sorted union of both vectors.
            Samples whose true or predicted label is not in ``labels`` are not counted.

    Returns:
        Integer array ``[C, C]``.

    Example:
        >>> confusion(["a", "b", "b"], ["a", "a", "b"], labels=["a", "b"]).tolist()
        [[1, 0], [1, 1]]
    """
    ti, pi, labs = _encode(y_true, y_pred, labels)
    c = len(labs)
    keep = (ti >= 0) & (pi >= 0)
    return np.bincount(ti[keep] * c + pi[keep], minlength=c * c).reshape(c, c)


def per_class_recall(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> dict:
    """Recall of each class that occurs in ``y_true`` (classes absent from it are left out).

    Example:
        >>> per_class_recall(["a", "a", "b"], ["a", "b", "b"])
        {'a': 0.5, 'b': 1.0}
    """
    tp, support, _, labs = _class_counts(y_true, y_pred, labels)
    return {lab: float(tp[i] / support[i]) for i, lab in enumerate(labs) if support[i] > 0}


def unweighted_average_recall(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> float:
    """UA / UAR: mean recall over the classes present in ``y_true``.

    Classes that never occur in ``y_true`` are ignored (as scikit-learn's
    ``balanced_accuracy_score`` does), so a class that is only predicted does not count
    as a zero recall.

    Args:
        y_true: True labels (strings or integers).
        y_pred: Predicted labels, same length.
        labels: Optional class list; when given, only these classes are scored.

    Returns:
        UA in ``[0, 1]``.

    Example:
        >>> unweighted_average_recall([0, 0, 0, 1], [0, 0, 1, 1])
        0.8333333333333333
    """
    tp, support, _, _ = _class_counts(y_true, y_pred, labels)
    if not np.any(support):
        raise ValueError("y_true is empty (or contains none of `labels`): UA is undefined")
    return ua_from_counts(tp, support)


def weighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """WA: plain accuracy (the fraction of samples predicted correctly).

    Example:
        >>> weighted_accuracy(["a", "b", "b", "b"], ["a", "b", "a", "b"])
        0.75
    """
    t = _as_1d("y_true", y_true)
    p = _as_1d("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("y_true is empty: WA is undefined")
    return float(np.mean(t == p))


def macro_f1(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> float:
    """Macro-averaged F1 over ``labels`` (default: the union of true and predicted labels).

    A class with no true and no predicted samples has F1 = 0 (scikit-learn's
    ``zero_division=0`` convention).

    Example:
        >>> round(macro_f1(["a", "a", "b"], ["a", "b", "b"]), 4)
        0.6667
    """
    tp, support, predicted, _ = _class_counts(y_true, y_pred, labels)
    tp = tp.astype(np.float64)
    denom = (support + predicted).astype(np.float64)  # 2tp + fp + fn
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if f1.size == 0:
        raise ValueError("no classes to score: y_true/y_pred are empty")
    return float(f1.mean())


def per_group_ua(y_true: Any, y_pred: Any, groups: Any, labels: Sequence[Hashable] | None = None) -> dict:
    """UA computed separately inside each group (e.g. per gender or per corpus).

    Args:
        y_true: True labels.
        y_pred: Predicted labels.
        groups: Group of each sample, same length (e.g. ``["f", "m", ...]``).
        labels: Optional class list passed to :func:`unweighted_average_recall`.

    Returns:
        ``{group: UA}`` ordered by sorted group value.

    Example:
        >>> per_group_ua(["a", "b", "a", "b"], ["a", "b", "b", "b"], ["f", "f", "m", "m"])
        {'f': 1.0, 'm': 0.5}
    """
    t = _as_1d("y_true", y_true)
    p = _as_1d("y_pred", y_pred)
    g = _as_1d("groups", groups)
    if not (t.shape == p.shape == g.shape):
        raise ValueError(f"y_true, y_pred and groups differ in length: {t.shape[0]}, {p.shape[0]}, {g.shape[0]}")
    out = {}
    for grp in sorted(set(g.tolist())):
        m = g == grp
        out[grp] = unweighted_average_recall(t[m], p[m], labels)
    return out


def summary(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> dict[str, float]:
    """UA, WA and macro F1 in one dict: ``{"ua": ..., "wa": ..., "f1": ...}``.

    Example:
        >>> summary(["a", "b"], ["a", "a"])
        {'ua': 0.5, 'wa': 0.5, 'f1': 0.3333333333333333}
    """
    return {
        "ua": unweighted_average_recall(y_true, y_pred, labels),
        "wa": weighted_accuracy(y_true, y_pred),
        "f1": macro_f1(y_true, y_pred, labels),
    }


def ua_from_counts(correct: Any, support: Any) -> float | np.ndarray:
    """UA from per-class correct counts and class supports.

    This is the one place where UA is computed from counts, so every code path (single
    vectors, batched numpy, batched torch, the ensemble search) gives bit-identical values
    for identical counts.

    Args:
        correct: Correct predictions per class, shape ``[C]`` or ``[B, C]``.
        support: Number of true samples per class, shape ``[C]``; classes with zero
            support are ignored.

    Returns:
        A float for 1-D ``correct``, else a float64 array ``[B]``.
    """
    correct = np.asarray(correct, dtype=np.float64)
    support = np.asarray(support)
    present = support > 0
    if not np.any(present):
        raise ValueError("no class has any true sample: UA is undefined")
    recall = correct[..., present] / support[present].astype(np.float64)
    ua = recall.sum(axis=-1) / float(present.sum())
    return float(ua) if np.ndim(ua) == 0 else ua


def _check_batched(y_true: np.ndarray, preds: np.ndarray, n_classes: int) -> None:
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D [N], got shape {tuple(y_true.shape)}")
    if preds.ndim != 2 or preds.shape[1] != y_true.shape[0]:
        raise ValueError(f"preds must be [B, N] with N={y_true.shape[0]}, got shape {tuple(preds.shape)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")


def batched_ua(y_true: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """UA of many integer prediction vectors against one label vector, vectorised.

    Args:
        y_true: Integer class indices ``[N]`` in ``0..n_classes-1``.
        preds: Integer predictions ``[B, N]``.
        n_classes: Number of classes.

    Returns:
        float64 array ``[B]``; classes absent from ``y_true`` are ignored.

    Example:
        >>> batched_ua(np.array([0, 1, 1]), np.array([[0, 1, 0]]), 2).tolist()
        [0.75]
    """
    y_true = np.asarray(y_true)
    preds = np.asarray(preds)
    _check_batched(y_true, preds, n_classes)
    if y_true.size and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise ValueError(f"y_true values must lie in [0, {n_classes}), got range [{y_true.min()}, {y_true.max()}]")
    support = np.bincount(y_true, minlength=n_classes)
    onehot = np.zeros((y_true.shape[0], n_classes), dtype=np.float32)
    onehot[np.arange(y_true.shape[0]), y_true] = 1.0
    # [B, N] @ [N, C] counts hits per class; float32 is exact for counts below 2**24.
    hits = (preds == y_true[None, :]).astype(np.float32) @ onehot
    return np.atleast_1d(ua_from_counts(np.rint(hits), support))


def batched_ua_torch(y_true: "torch.Tensor", preds: "torch.Tensor", n_classes: int) -> "torch.Tensor":  # noqa: F821
    """Torch version of :func:`batched_ua`; runs on the tensors' device (CPU or GPU).

    Args:
        y_true: Integer tensor ``[N]``.
        preds: Integer tensor ``[B, N]`` on the same device.
        n_classes: Number of classes.

    Returns:
        float64 tensor ``[B]`` on the input device.
    """
    import torch

    _check_batched(y_true, preds, n_classes)
    y_true = y_true.long()
    support = torch.bincount(y_true, minlength=n_classes).to(torch.float64)
    correct = (preds == y_true.unsqueeze(0)).to(torch.float64)
    hits = torch.zeros((preds.shape[0], n_classes), dtype=torch.float64, device=preds.device)
    hits.index_add_(1, y_true, correct)
    present = support > 0
    if not bool(present.any()):
        raise ValueError("no class has any true sample: UA is undefined")
    return (hits[:, present] / support[present]).sum(dim=1) / present.sum().to(torch.float64)
