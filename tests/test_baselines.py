"""Baseline model families: registry entries, shapes, padding invariance, argument checks."""

from __future__ import annotations

import pytest
import torch

from serray.models.contract import Batch

from serray.models import registry
from serray.models.baselines import CNNLSTM, DCNN, MLP, length_mask
from serray.models.registry import InputInfo

TRAINING_KEYS = {"epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "lr_decay", "patience", "early_stop"}


def test_registry_lists_baselines_with_training_keys():
    names = set(registry.names())
    assert {"svm", "logreg", "mlp", "dcnn", "cnn_lstm"} <= names
    for name in ("mlp", "dcnn", "cnn_lstm"):
        spec = registry.get(name)
        assert spec.backend == "torch" and TRAINING_KEYS <= set(spec.default_config), name
    assert registry.get("svm").backend == "sklearn" and registry.get("svm").input_kind == "vector"
    assert registry.get("dcnn").input_kind == "sequence" and registry.get("dcnn").default_features == ("mfb",)
    with pytest.raises(ValueError, match="no hyperparameter"):
        registry.get("svm").config(overrides={"nonsense": 1})


def test_dcnn_follows_paper_shape():
    spec = registry.get("dcnn")
    model = spec.build(spec.config(), InputInfo(shape=(40,), n_classes=3))
    convs = list(model.convs)
    assert len(convs) == 2 and all(c.out_channels == 128 for c in convs)
    assert [c.dilation[0] for c in convs] == [1, 2]
    assert model.fc.out_features == 128


def test_dcnn_and_mtl_cnn_parameter_counts_are_the_papers():
    """Paper 000 sec. 3.3 (three classes): DCNN 175,619 and MTL-CNN 192,389 parameters;
    conv1 holds 40 x 128 x 15 = 76,800 weights, conv2 128 x 128 x 5 (no biases)."""
    counts = {}
    for name in ("dcnn", "mtl_cnn"):
        spec = registry.get(name)
        model = spec.build(spec.config(), InputInfo(shape=(40,), n_classes=3, aux_classes={"gender": 2}))
        counts[name] = sum(p.numel() for p in model.parameters())
        assert [c.weight.numel() for c in model.convs] == [76_800, 81_920]
        assert all(c.bias is None for c in model.convs)
    assert counts == {"dcnn": 175_619, "mtl_cnn": 192_389}


@pytest.mark.parametrize("name", ["dcnn", "cnn_lstm"])
def test_sequence_models_ignore_padding(name):
    torch.manual_seed(0)
    spec = registry.get(name)
    model = spec.build(spec.config(preset="small"), InputInfo(shape=(8,), n_classes=4)).eval()
    short = torch.randn(1, 37, 8)
    padded = torch.cat([short, torch.zeros(1, 23, 8)], dim=1)
    other = torch.randn(1, 60, 8)
    batch = torch.cat([padded, other])
    with torch.no_grad():
        alone = model(short, torch.tensor([37]))["logits"]
        together = model(batch, torch.tensor([37, 60]))["logits"]
    torch.testing.assert_close(together[0:1], alone, rtol=1e-4, atol=1e-5)
    assert together.shape == (2, 4)


def test_loss_is_cross_entropy():
    model = MLP(5, 3, [4], 0.0)
    out = model(torch.randn(6, 5))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    total, parts = model.loss(Batch({"x": None}, {}, y), out)
    torch.testing.assert_close(total, torch.nn.functional.cross_entropy(out["logits"], y))
    assert set(parts) == {"emotion"}


def test_bad_arguments_raise_early():
    with pytest.raises(ValueError, match="odd"):
        DCNN(40, 3, kernel_size=4)
    with pytest.raises(ValueError, match="pooling"):
        DCNN(40, 3, pooling="median")
    with pytest.raises(ValueError, match="pool"):
        CNNLSTM(40, 3, pool=0)
    with pytest.raises(ValueError, match="n_classes"):
        MLP(10, 1)
    with pytest.raises(ValueError, match="sample shape"):
        registry.get("mlp").build(registry.get("mlp").config(), InputInfo(shape=(2, 3, 4), n_classes=3))


def test_length_mask():
    assert length_mask(torch.tensor([0, 2]), 3).tolist() == [[False, False, False], [True, True, False]]


def test_sklearn_builders_use_config():
    svm = registry.get("svm").build(registry.get("svm").config(overrides={"C": 3.0, "kernel": "rbf"}), InputInfo((88,), 7))
    assert svm.C == 3.0 and svm.kernel == "rbf"
    lr = registry.get("logreg").build(registry.get("logreg").config(overrides={"C": 0.5}), InputInfo((88,), 7))
    assert lr.C == 0.5
