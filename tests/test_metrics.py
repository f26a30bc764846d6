"""Metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
)

from serray import metrics

CLASSES = ["angry", "happy", "neutral", "sad"]


def _random_labels(seed: int, n: int = 500, imbalance=(0.5, 0.25, 0.15, 0.1)):
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASSES), size=n, p=imbalance)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, len(CLASSES), n))
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scalar_metrics_match_sklearn_int_and_str(seed):
    y, p = _random_labels(seed)
    ys = np.array(CLASSES)[y]
    ps = np.array(CLASSES)[p]
    for yt, yp in ((y, p), (ys, ps), (ys.tolist(), ps.tolist())):
        assert metrics.unweighted_average_recall(yt, yp) == pytest.approx(balanced_accuracy_score(yt, yp), abs=1e-12)
        assert metrics.unweighted_average_recall(yt, yp) == pytest.approx(
            recall_score(yt, yp, average="macro"), abs=1e-12
        )
        assert metrics.weighted_accuracy(yt, yp) == pytest.approx(accuracy_score(yt, yp), abs=1e-12)
        assert metrics.macro_f1(yt, yp) == pytest.approx(f1_score(yt, yp, average="macro"), abs=1e-12)
    labels = ["sad", "neutral", "happy", "angry"]
    np.testing.assert_array_equal(
        metrics.confusion(ys, ps, labels), confusion_matrix(ys, ps, labels=labels)
    )
    s = metrics.summary(ys, ps)
    assert set(s) == {"ua", "wa", "f1"}
    assert s["ua"] == pytest.approx(balanced_accuracy_score(ys, ps))


def test_ua_ignores_classes_absent_from_y_true():
    y = np.array(["a", "a", "b", "b"])
    p = np.array(["a", "c", "b", "b"])  # "c" only predicted
    ua = metrics.unweighted_average_recall(y, p)
    assert ua == pytest.approx(0.75)
    with pytest.warns(UserWarning):
        assert ua == pytest.approx(balanced_accuracy_score(y, p))
    assert ua == pytest.approx(recall_score(y, p, labels=["a", "b"], average="macro"))
    # a prediction outside `labels` is still a miss of its true class
    assert metrics.unweighted_average_recall(y, p, labels=["a", "b"]) == pytest.approx(0.75)
    assert metrics.per_class_recall(y, p, labels=["a", "b"]) == {"a": 0.5, "b": 1.0}
    # explicit labels with an absent class: still ignored
    assert metrics.unweighted_average_recall(y, p, labels=["a", "b", "c", "d"]) == pytest.approx(0.75)


def test_macro_f1_with_labels_matches_sklearn():
    y, p = _random_labels(5)
    labels = [3, 0, 1]
    assert metrics.macro_f1(y, p, labels=labels) == pytest.approx(
        f1_score(y, p, labels=labels, average="macro", zero_division=0)
    )


def test_per_group_ua():
    y, p = _random_labels(7)
    g = np.random.default_rng(7).choice(["f", "m"], size=y.shape[0])
    out = metrics.per_group_ua(y, p, g)
    assert list(out) == ["f", "m"]
    for grp, val in out.items():
        m = g == grp
        assert val == pytest.approx(balanced_accuracy_score(y[m], p[m]))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.unweighted_average_recall([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        metrics.weighted_accuracy([], [])
    with pytest.raises(ValueError, match="duplicates"):
        metrics.confusion([0], [0], labels=[0, 0])
    with pytest.raises(ValueError, match=r"preds must be \[B, N\]"):
        metrics.batched_ua(np.zeros(3, int), np.zeros((2, 4), int), 2)
    with pytest.raises(ValueError, match="y_true values"):
        metrics.batched_ua(np.array([0, 5]), np.zeros((1, 2), int), 2)


def _batch(seed: int, b: int = 40):
    y, _ = _random_labels(seed, n=300, imbalance=(0.55, 0.3, 0.15, 0.0))  # class 3 absent
    rng = np.random.default_rng(seed + 100)
    preds = np.where(rng.random((b, y.shape[0])) < 0.5, y[None], rng.integers(0, 4, (b, y.shape[0])))
    return y, preds


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_ua_matches_sklearn(seed):
    y, preds = _batch(seed)
    got = metrics.batched_ua(y, preds, n_classes=4)
    assert got.shape == (preds.shape[0],)
    want = [recall_score(y, row, labels=[0, 1, 2], average="macro") for row in preds]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_batched_ua_torch_matches_numpy():
    y, preds = _batch(3)
    got = metrics.batched_ua_torch(torch.from_numpy(y), torch.from_numpy(preds), n_classes=4)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), metrics.batched_ua(y, preds, 4), rtol=0, atol=1e-12)
