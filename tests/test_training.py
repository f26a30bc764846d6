"""Fold data, normalisation, the fold trainers and lock-step fold running."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from serray.models import registry
from serray.models.contract import InputSpec
from serray.models.layers import SERModule
from serray.models.registry import InputInfo, ModelSpec
from serray.protocols import Fold, make_folds
from serray.training.executor import run_folds
from serray.training.data import (
    PackedFeatures,
    TrainingInputs,
    build_fold_data,
    make_label_table,
    normalize_features,
    pack_features,
)
from serray.training.trainer import SklearnFoldTrainer, TorchFoldTrainer, make_trainer, softmax
from serray.training.resources import Resources

from _training_helpers import segment_features, sequence_features, synth_manifest, vector_features


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    return synth_manifest(n_speakers=6, per_class=6)


@pytest.fixture(scope="module")
def folds(manifest):
    return make_folds(manifest, "loso")


def _inputs(manifest, fs, domain_column=None):
    return TrainingInputs(pack_features(fs, manifest["utt_id"].tolist()), make_label_table(manifest, domain_column=domain_column))


def _fold_data(manifest, fs, fold, normalize="global", domain_column=None, lazy=None):
    inp = _inputs(manifest, fs, domain_column)
    return build_fold_data(inp.packed, inp.table, fold, normalize, lazy=lazy)


MLP_FAST = {"hidden_sizes": [16], "epochs": 6, "patience": 3, "batch_size": 16}


# -- packing and normalisation --------------------------------------------------------
def test_pack_features_reorders_subsets_and_takes(manifest):
    fs = sequence_features(manifest)
    ids = manifest["utt_id"].tolist()[::-1][:5]
    p = pack_features(fs, ids)
    assert p.n == 5 and p.kind == "sequence"
    for i, u in enumerate(ids):
        np.testing.assert_array_equal(p.data[p.offsets[i] : p.offsets[i + 1]], fs.data[fs.utt_ids.index(u)])
    sub = p.take([3, 1])
    np.testing.assert_array_equal(sub.data[: sub.offsets[1]], p.data[p.offsets[3] : p.offsets[4]])
    with pytest.raises(ValueError, match="no features"):
        pack_features(fs, ["nope"])


def test_global_normalisation_uses_training_statistics_only():
    x = np.array([[0.0, 5.0], [2.0, 5.0], [100.0, -7.0]], dtype=np.float32)
    p = PackedFeatures("vector", x, None)
    out = normalize_features(p, np.array(["a", "a", "b"]), np.array([True, True, False]), "global")
    # mean/std of rows 0-1 only: dim0 mean 1 std 1; dim1 constant -> std 1
    np.testing.assert_allclose(out.data, [[-1.0, 0.0], [1.0, 0.0], [99.0, -12.0]])
    # changing a non-training row leaves training rows unchanged
    x2 = x.copy()
    x2[2] = 1e6
    out2 = normalize_features(PackedFeatures("vector", x2, None), np.array(["a", "a", "b"]), np.array([True, True, False]), "global")
    np.testing.assert_allclose(out2.data[:2], out.data[:2])
    assert normalize_features(p, np.array(["a"] * 3), np.ones(3, bool), "none") is p
    with pytest.raises(ValueError, match="normalize must be"):
        normalize_features(p, np.array(["a"] * 3), np.ones(3, bool), "minmax")


@pytest.mark.parametrize("kind", ["vector", "sequence"])
def test_speaker_normalisation_standardises_every_speaker(manifest, kind):
    fs = vector_features(manifest) if kind == "vector" else sequence_features(manifest)
    p = pack_features(fs)
    spk = manifest["speaker"].to_numpy()
    out = normalize_features(p, spk, np.zeros(len(spk), bool), "speaker")  # no training mask needed
    owner = out.row_owner()
    for s in np.unique(spk):
        rows = out.data[np.isin(owner, np.flatnonzero(spk == s))]
        np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(rows.std(axis=0), 1.0, atol=1e-4)


def test_utterance_normalisation_standardises_each_utterances_frames_and_vectors_globally(manifest, folds):
    seq = pack_features(sequence_features(manifest))
    spk = manifest["speaker"].to_numpy()
    out = normalize_features(seq, spk, np.zeros(len(spk), bool), "utterance")  # reads no other utterance
    for i in range(seq.n):
        rows = out.data[out.offsets[i]:out.offsets[i + 1]]
        np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(rows.std(axis=0), 1.0, atol=1e-4)
    # an utterance's values do not depend on any other utterance
    other = pack_features(sequence_features(manifest))
    other.data[other.offsets[1]:] *= 7.0
    again = normalize_features(other, spk, np.zeros(len(spk), bool), "utterance")
    np.testing.assert_allclose(again.data[:out.offsets[1]], out.data[:out.offsets[1]], atol=1e-6)
    # in a fold: frames per utterance (lazy views and copies alike), vectors with training statistics
    table = make_label_table(manifest)
    inputs = {"x": seq, "v": pack_features(vector_features(manifest))}
    for lazy in (True, False):
        d = build_fold_data(inputs, table, folds[0], normalize="utterance", lazy=lazy)
        test = d.test.inputs["x"]
        frames = test.gather(np.arange(len(test.rows))) if lazy else test.data
        np.testing.assert_allclose(frames[: test.offsets[1]].mean(axis=0), 0.0, atol=1e-5)
        glob = build_fold_data(inputs, table, folds[0], normalize="global")
        np.testing.assert_array_equal(d.test.inputs["v"].data, glob.test.inputs["v"].data)
    assert d.normalize == "utterance"


def test_segment_normalisation_is_per_channel_and_frequency(manifest):
    fs = segment_features(manifest, shape=(2, 4, 5))
    p = pack_features(fs)
    out = normalize_features(p, manifest["speaker"].to_numpy(), np.ones(p.n, bool), "global")
    np.testing.assert_allclose(out.data.mean(axis=(0, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.data.std(axis=(0, 3)), 1.0, atol=1e-4)


@pytest.mark.parametrize("mode", ["global", "speaker", "utterance", "none"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("kind", ["sequence", "segments"])
def test_frame_and_segment_parts_are_lazy_views_identical_to_eager_normalisation(manifest, folds, mode, dtype, kind):
    from serray.training.data import LazyRows, _normalize_part, _statistics

    fs = sequence_features(manifest) if kind == "sequence" else segment_features(manifest, shape=(2, 4, 5))
    fs = type(fs)(fs.kind, fs.utt_ids, [a.astype(dtype) * 3 + 1 for a in fs.data])
    packed = pack_features(fs)
    assert packed.data.dtype == dtype  # float16 frames/segments stay float16 (exact in float32)
    table = make_label_table(manifest)
    fold = folds[0]
    d = build_fold_data(packed, table, fold, normalize=mode, lazy=True)
    speakers = np.asarray(table.speaker).astype(str)
    idx_all = {p: table.index_of(getattr(fold, p)) for p in ("train", "validation", "test")}
    stat_idx = idx_all["train"] if mode == "global" else np.concatenate(list(idx_all.values()))
    groups, stat_mode = speakers, mode
    if mode == "utterance":  # every utterance its own group
        groups, stat_mode = np.array([f"utt{i}" for i in range(len(speakers))], dtype=object), "speaker"
    stats = None if mode == "none" else _statistics(packed, groups, stat_idx, stat_mode)
    for part in ("train", "validation", "test"):
        rows = getattr(d, part).features
        assert isinstance(rows, LazyRows) and rows.kind == kind
        assert np.shares_memory(rows.source, packed.data)  # no copy
        eager = packed.take(idx_all[part])  # float32 copy, normalised in place
        if stats is not None:
            _normalize_part(eager, groups[idx_all[part]], stats, stat_mode)
        shuffled = np.random.default_rng(0).permutation(len(rows.rows))
        np.testing.assert_array_equal(rows.gather(shuffled), eager.data[shuffled])  # bit-identical
        np.testing.assert_array_equal(rows.offsets, eager.offsets)
        assert rows.gather([0]).dtype == np.float32


def test_large_frame_folds_become_views_small_ones_copies(manifest, folds, monkeypatch):
    import serray.training.data as data_mod

    table = make_label_table(manifest)
    packed = pack_features(sequence_features(manifest))
    fold_bytes = packed.data.shape[0] * packed.data.shape[1] * 4  # every utterance is in fold 0
    monkeypatch.setattr(data_mod, "COPY_MAX_BYTES", fold_bytes)
    assert isinstance(build_fold_data(packed, table, folds[0]).train.features, PackedFeatures)
    monkeypatch.setattr(data_mod, "COPY_MAX_BYTES", fold_bytes - 1)
    assert isinstance(build_fold_data(packed, table, folds[0]).train.features, data_mod.LazyRows)
    vec = pack_features(vector_features(manifest))
    assert isinstance(build_fold_data(vec, table, folds[0], lazy=True).train.features, PackedFeatures)


@pytest.mark.parametrize("lazy", [True, False])
@pytest.mark.parametrize("max_frames", [0, 9])
def test_sequence_batches_equal_padded_eager_copies(manifest, folds, max_frames, lazy):
    """The trainer's padded mini-batches (with random crops) match a hand-padded eager copy."""
    from serray.training.data import _normalize_part, _statistics

    table = make_label_table(manifest)
    d = build_fold_data(pack_features(sequence_features(manifest)), table, folds[0], normalize="speaker", lazy=lazy)
    speakers = np.asarray(table.speaker).astype(str)
    idx = table.index_of(folds[0].train)
    all_idx = np.concatenate([table.index_of(getattr(folds[0], p)) for p in ("train", "validation", "test")])
    packed = pack_features(sequence_features(manifest))
    eager = packed.take(idx)
    _normalize_part(eager, speakers[idx], _statistics(packed, speakers, all_idx, "speaker"), "speaker")
    spec = registry.get("dcnn")
    tr = TorchFoldTrainer(spec, spec.config(preset="small", overrides={"max_frames": max_frames}), d, seed=3, device="cpu")
    t = tr._part(d.train)
    batch = np.array([4, 0, 7, 2])
    crop_rng = np.random.default_rng(11)
    b = t.batch(batch, max_frames, np.random.default_rng(11))
    x, lengths = b.x, b.lengths["x"]
    assert b.y.tolist() == d.train.y[batch].tolist() and b.owner is None
    assert x.shape[0] == len(batch) and x.shape[1] == int(lengths.max())
    for j, i in enumerate(batch):
        a, b = eager.offsets[i], eager.offsets[i + 1]
        if max_frames and b - a > max_frames:  # the same draw the trainer makes
            a += int(crop_rng.integers(0, b - a - max_frames + 1))
            b = a + max_frames
        n = int(lengths[j])
        assert n == b - a and (not max_frames or n <= max_frames)
        np.testing.assert_array_equal(x[j, :n].numpy(), eager.data[a:b])
        assert not x[j, n:].any()  # zero padding


def test_build_fold_data_parts_and_errors(manifest, folds):
    fs = vector_features(manifest)
    fold = folds[0]
    d = _fold_data(manifest, fs, fold)
    assert list(d.test.utt_ids) == list(fold.test)
    assert len(d.train) == len(fold.train) and len(d.validation) == len(fold.validation)
    lut = dict(zip(manifest["utt_id"], manifest["emotion"]))
    assert [d.classes[i] for i in d.test.y] == [lut[u] for u in d.test.utt_ids]
    train_speakers = set(manifest.set_index("utt_id").loc[list(d.train.utt_ids), "speaker"])
    test_speakers = set(manifest.set_index("utt_id").loc[list(d.test.utt_ids), "speaker"])
    assert not train_speakers & test_speakers
    inp = _inputs(manifest, fs)
    bad = Fold(index=0, name="bad", train=fold.train, validation=fold.validation, test=np.array(["ghost"]), validation_mode="speaker")
    with pytest.raises(ValueError, match="without features"):
        build_fold_data(inp.packed, inp.table, bad)
    overlap = Fold(index=0, name="ov", train=fold.train, validation=fold.validation, test=fold.train[:2], validation_mode="speaker")
    with pytest.raises(ValueError, match="more than one"):
        build_fold_data(inp.packed, inp.table, overlap)


# -- torch trainer --------------------------------------------------------------------
def test_torch_trainer_keeps_best_epoch_weights(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[1])
    cfg = registry.get("mlp").config(overrides={**MLP_FAST, "epochs": 8, "patience": 0, "lr": 0.05})
    tr = TorchFoldTrainer("mlp", cfg, d, seed=3, device="cpu")
    steps = []
    while not tr.stopped:
        steps.append(tr.step())
    assert [s["epoch"] for s in steps] == list(range(1, 9))
    assert {"train_loss", "val_loss", "val_ua", "val_wa", "best_epoch", "stopped"} <= set(steps[-1])
    best = max(steps, key=lambda s: (s["val_ua"], -s["val_loss"]))
    res = tr.finalize()
    assert res.best_epoch == best["epoch"] == steps[-1]["best_epoch"]
    # the returned validation logits come from the best epoch's weights
    assert res.metrics()["val_ua"] == pytest.approx(best["val_ua"])
    assert res.test_logits.shape == (len(folds[1].test), 3)
    assert tr.step() == steps[-1]  # stepping after the stop changes nothing


def test_early_stopping_after_patience(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[0])
    cfg = registry.get("mlp").config(overrides={**MLP_FAST, "epochs": 50, "patience": 2, "lr": 1e-12, "early_stop": "loss"})
    tr = TorchFoldTrainer("mlp", cfg, d, seed=0, device="cpu")
    res = tr.run()
    # with a vanishing learning rate the validation loss cannot improve after epoch 1
    assert res.epochs <= 4 and res.epochs - res.best_epoch == 2


def test_early_stop_none_trains_every_epoch_and_keeps_the_last_weights(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[0])
    over = {**MLP_FAST, "epochs": 8, "patience": 2, "lr": 0.2}  # a validation loss that rises at epochs 2-3
    tr = TorchFoldTrainer("mlp", registry.get("mlp").config(overrides={**over, "early_stop": "none"}), d, seed=0, device="cpu")
    steps = [tr.step() for _ in range(8)]
    last_val = tr.predict_logits(d.validation, validation=True)
    res = tr.finalize()
    # no patience stop, the last epoch is the "best", and its weights give the logits
    assert [s["epoch"] for s in steps] == list(range(1, 9)) and steps[-1]["stopped"]
    assert res.best_epoch == res.epochs == 8
    np.testing.assert_allclose(res.validation_logits, last_val, rtol=1e-6, atol=1e-6)
    # the same fold under the loss rule stops after patience and keeps an earlier epoch
    stopped = TorchFoldTrainer("mlp", registry.get("mlp").config(overrides={**over, "early_stop": "loss"}), d, seed=0, device="cpu").run()
    assert stopped.epochs < 8 and stopped.best_epoch < stopped.epochs


def test_early_stop_rule_is_checked_with_the_choices():
    from serray.training.trainer import check_config

    with pytest.raises(ValueError, match=r"early_stop must be one of \('ua', 'loss', 'none'\)"):
        check_config("mlp", registry.get("mlp").config(overrides={"early_stop": "last"}))


def test_same_seed_same_logits_different_seed_differs(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[2])
    cfg = registry.get("mlp").config(overrides=MLP_FAST)
    a = TorchFoldTrainer("mlp", cfg, d, seed=7, device="cpu").run()
    b = TorchFoldTrainer("mlp", cfg, d, seed=7, device="cpu").run()
    c = TorchFoldTrainer("mlp", cfg, d, seed=8, device="cpu").run()
    np.testing.assert_array_equal(a.test_logits, b.test_logits)
    np.testing.assert_array_equal(a.validation_logits, b.validation_logits)
    assert not np.array_equal(a.test_logits, c.test_logits)


def test_balanced_sampler_draws_small_classes_as_often_and_is_seeded(manifest, folds):
    from serray.training.run import config_id
    from serray.training.trainer import check_config, epoch_order

    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    draws = np.concatenate([y[epoch_order(y, "balanced", np.random.default_rng(s))] for s in range(20)])
    share = np.bincount(draws, minlength=3) / len(draws)
    assert np.all(np.abs(share - 1 / 3) < 0.05)  # plain shuffling gives 0.80 / 0.15 / 0.05
    assert np.array_equal(epoch_order(y, "balanced", np.random.default_rng(4)),
                          epoch_order(y, "balanced", np.random.default_rng(4)))
    d = _fold_data(manifest, vector_features(manifest), folds[2])
    base = registry.get("mlp").config(overrides=MLP_FAST)
    bal = registry.get("mlp").config(overrides={**MLP_FAST, "sampler": "balanced"})
    a = TorchFoldTrainer("mlp", bal, d, seed=7, device="cpu").run()
    b = TorchFoldTrainer("mlp", bal, d, seed=7, device="cpu").run()
    c = TorchFoldTrainer("mlp", base, d, seed=7, device="cpu").run()
    np.testing.assert_array_equal(a.test_logits, b.test_logits)
    assert not np.array_equal(a.test_logits, c.test_logits)
    # the default is not written into configs, so runs made before the key keep their ids
    assert "sampler" not in check_config("mlp", base)
    assert config_id("mlp", check_config("mlp", base)) != config_id("mlp", check_config("mlp", bal))
    with pytest.raises(ValueError, match=r"sampler must be one of \('shuffle', 'balanced'\)"):
        TorchFoldTrainer("mlp", registry.get("mlp").config(overrides={**MLP_FAST, "sampler": "oversample"}), d)


def test_interleaved_trainers_match_separate_runs(manifest, folds):
    fs = vector_features(manifest)
    cfg = registry.get("mlp").config(overrides=MLP_FAST)
    datas = [_fold_data(manifest, fs, f) for f in folds[:2]]
    separate = [TorchFoldTrainer("mlp", cfg, d, seed=1, device="cpu").run() for d in datas]
    trainers = [TorchFoldTrainer("mlp", cfg, d, seed=1, device="cpu") for d in datas]
    torch.manual_seed(12345)  # global RNG use in between must not matter
    while not all(t.stopped for t in trainers):
        for t in trainers:
            t.step()
            torch.rand(3)
    for t, ref in zip(trainers, separate):
        np.testing.assert_array_equal(t.finalize().test_logits, ref.test_logits)


class _SegNet(SERModule):
    """Tiny segment classifier used to test segment averaging."""

    def __init__(self, shape, n_classes):
        super().__init__()
        self.fc = nn.Linear(int(np.prod(shape)), n_classes)

    def forward(self, x):
        return {"logits": self.fc(x.flatten(1))}

    def loss(self, batch, out):
        assert batch.aux["domain"].shape == batch.y.shape and batch.owner is not None
        ce = nn.functional.cross_entropy(out["logits"], batch.y)
        return ce, {"emotion": ce}


_SEG_SPEC = ModelSpec(
    name="_test_segnet",
    backend="torch",
    inputs={"x": InputSpec("segments", ("spectrogram",))},
    default_config={"epochs": 3, "batch_size": 8, "lr": 0.01, "patience": 0, "optimizer": "adam", "domain": "gender"},
    build=lambda cfg, info: _SegNet(info.shape, info.n_classes),
    aux_labels={"domain": "gender"},
)


@pytest.mark.parametrize("lazy", [True, False])
def test_segments_utterance_logits_average_segment_probabilities(manifest, folds, lazy):
    fs = segment_features(manifest)
    d = _fold_data(manifest, fs, folds[0], domain_column="gender", lazy=lazy)
    assert d.domains == ("f", "m")
    tr = TorchFoldTrainer(_SEG_SPEC, _SEG_SPEC.config(), d, seed=0, device="cpu")
    res = tr.run()
    part = d.test
    x = part.features.gather(np.arange(len(part.features.rows))) if lazy else part.features.data
    with torch.no_grad():
        seg_logits = tr.model(torch.from_numpy(x))["logits"].numpy()
    probs = softmax(seg_logits.astype(np.float64))
    for i in range(len(part)):
        a, b = part.features.offsets[i], part.features.offsets[i + 1]
        np.testing.assert_allclose(res.test_logits[i], np.log(probs[a:b].mean(axis=0)), rtol=1e-4, atol=1e-5)
    assert len(res.test_logits) == len(folds[0].test)


@pytest.mark.parametrize("kind", ["sequence", "segments"])
def test_training_on_views_and_on_copies_gives_identical_logits(manifest, folds, kind):
    fs = sequence_features(manifest) if kind == "sequence" else segment_features(manifest)
    spec = registry.get("dcnn") if kind == "sequence" else _SEG_SPEC
    cfg = spec.config(preset="small", overrides={"epochs": 3, "max_frames": 16}) if kind == "sequence" else spec.config()
    logits = []
    for lazy in (True, False):
        d = _fold_data(manifest, fs, folds[0], normalize="speaker", domain_column="gender", lazy=lazy)
        res = TorchFoldTrainer(spec, cfg, d, seed=5, device="cpu").run()
        logits.append(np.concatenate([res.validation_logits, res.test_logits]))
    np.testing.assert_array_equal(logits[0], logits[1])


@pytest.mark.parametrize("model", ["dcnn", "cnn_lstm"])
def test_sequence_models_train_on_variable_lengths(manifest, folds, model):
    fs = sequence_features(manifest)
    d = _fold_data(manifest, fs, folds[0])
    cfg = registry.get(model).config(preset="small", overrides={"epochs": 2, "max_frames": 15})
    res = TorchFoldTrainer(model, cfg, d, seed=0, device="cpu").run()
    assert res.epochs == 2 and res.test_logits.shape == (len(folds[0].test), 3)
    assert np.isfinite(res.test_logits).all()


def test_trainer_rejects_wrong_kind_and_bad_config(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[0])
    with pytest.raises(ValueError, match="takes sequence features"):
        TorchFoldTrainer("dcnn", registry.get("dcnn").config(), d)
    with pytest.raises(ValueError, match="optimizer"):
        TorchFoldTrainer("mlp", registry.get("mlp").config(overrides={"optimizer": "rmsprop"}), d)
    with pytest.raises(ValueError, match="sklearn model"):
        TorchFoldTrainer("svm", registry.get("svm").config(), d)


# -- scikit-learn trainer -------------------------------------------------------------
def test_sklearn_trainer_one_step_and_logits(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[3])
    tr = make_trainer("logreg", registry.get("logreg").config(overrides={"refit": False}), d, seed=0)
    assert isinstance(tr, SklearnFoldTrainer)
    m = tr.step()
    assert m["stopped"] and m["epoch"] == 1 and 0.0 <= m["val_ua"] <= 1.0
    res = tr.finalize()
    np.testing.assert_allclose(softmax(res.test_logits.astype(np.float64)), tr.estimator.predict_proba(d.test.features.data), atol=1e-5)
    assert res.model_record == {}
    svm = make_trainer("svm", registry.get("svm").config(overrides={"refit": False}), d).run()
    assert svm.test_logits.shape == (len(d.test), 3)
    assert svm.metrics()["test_ua"] > 0.5  # separable synthetic classes


def test_sklearn_refit_trains_the_test_model_on_training_and_validation(manifest, folds):
    """A fixed configuration selects nothing by validation: by default its test logits come
    from a fit on training + validation, its validation logits from the fit without them."""
    from sklearn.linear_model import LogisticRegression

    d = _fold_data(manifest, vector_features(manifest), folds[3])
    res = make_trainer("logreg", registry.get("logreg").config(), d, seed=0).run()
    cfg = registry.get("logreg").config()
    on_train = LogisticRegression(C=cfg["C"], max_iter=cfg["max_iter"]).fit(d.train.features.data, d.train.y)
    both = LogisticRegression(C=cfg["C"], max_iter=cfg["max_iter"]).fit(
        np.concatenate([d.train.features.data, d.validation.features.data]), np.concatenate([d.train.y, d.validation.y]))
    np.testing.assert_allclose(softmax(res.validation_logits.astype(np.float64)), on_train.predict_proba(d.validation.features.data), atol=1e-5)
    np.testing.assert_allclose(softmax(res.test_logits.astype(np.float64)), both.predict_proba(d.test.features.data), atol=1e-5)
    assert not np.allclose(both.predict_proba(d.test.features.data), on_train.predict_proba(d.test.features.data), atol=1e-3)
    assert res.model_record == {"refit": "train+validation", "n_fit": len(d.train) + len(d.validation)}


# -- lock-step running ----------------------------------------------------------------
def test_run_folds_lockstep_callback_and_stop(manifest, folds):
    inp = _inputs(manifest, vector_features(manifest))
    cfg = registry.get("mlp").config(overrides={**MLP_FAST, "patience": 0, "epochs": 4})
    seen = []

    def on_epoch(epoch, per_fold):
        seen.append((epoch, [m["fold"] for m in per_fold], [m["epoch"] for m in per_fold]))
        return epoch == 2

    res = run_folds("mlp", cfg, inp, folds[:3], resources=Resources(parallel=False, device="cpu"), on_epoch=on_epoch)
    assert seen == [(1, [0, 1, 2], [1, 1, 1]), (2, [0, 1, 2], [2, 2, 2])]
    assert [r.epochs for r in res] == [2, 2, 2]
    # without a callback folds run one after another, to the same numbers
    full = run_folds("mlp", cfg, inp, folds[:3], resources=Resources(parallel=False, device="cpu"))
    assert [r.epochs for r in full] == [4, 4, 4]
    again = run_folds("mlp", cfg, inp, folds[:3], resources=Resources(parallel=False, device="cpu"), on_epoch=lambda e, m: None)
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a.test_logits, b.test_logits)


@pytest.mark.slow
def test_run_folds_parallel_actors_match_local(manifest, folds):
    from serray.raycluster import init_ray

    init_ray(num_cpus=2)
    inp = _inputs(manifest, vector_features(manifest))
    cfg = registry.get("mlp").config(overrides=MLP_FAST)
    folds = folds[:3]
    epochs = []
    par = run_folds("mlp", cfg, inp, folds, resources=Resources(parallel=True, device="cpu"), on_epoch=lambda e, m: epochs.append(e))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # actors run one thread each
    try:
        loc = run_folds("mlp", cfg, inp, folds, resources=Resources(parallel=False, device="cpu"))
    finally:
        torch.set_num_threads(torch_threads)
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) == max(r.epochs for r in par)
    for a, b in zip(par, loc):
        assert a.index == b.index and a.epochs == b.epochs
        np.testing.assert_allclose(a.test_logits, b.test_logits, rtol=1e-5, atol=1e-5)
    # without a callback each actor trains its folds to the end in one call: the same numbers
    free = run_folds("mlp", cfg, inp, folds, resources=Resources(parallel=True, device="cpu"))
    for a, b in zip(free, par):
        assert a.index == b.index and a.epochs == b.epochs
        np.testing.assert_array_equal(a.test_logits, b.test_logits)
    # one actor per fold (fractional CPUs) gives the same numbers as packed actors
    svm_par = run_folds("svm", registry.get("svm").config(), inp, folds, resources=Resources(parallel=True, folds_per_actor=1))
    svm_loc = run_folds("svm", registry.get("svm").config(), inp, folds, resources=Resources(parallel=False))
    for a, b in zip(svm_par, svm_loc):
        np.testing.assert_array_equal(a.test_logits, b.test_logits)


class _LocalShared:
    """A stand-in for SharedInputs: the inputs themselves, no object store."""

    def __init__(self, inputs):
        self.inputs = inputs

    def resolve(self):
        return self.inputs


def _without_times(steps):
    return [[{k: v for k, v in m.items() if k not in ("seconds", "cpu_seconds")} for m in ms] for ms in steps]


def test_fold_actor_keeps_epochs_trained_ahead_only_for_the_same_config(manifest, folds):
    """A warm actor that trained a config's first epochs ahead serves them to a trial of
    that config (the same metrics and logits as training then); any other config, or the
    same config once a trial has stepped, gets new trainers."""
    from serray.training.actors import _FoldActorImpl

    threads = torch.get_num_threads()
    shared = _LocalShared(_inputs(manifest, vector_features(manifest)))
    cfg = registry.get("mlp").config(overrides=MLP_FAST)
    other = {**cfg, "lr": cfg["lr"] * 3}
    try:
        def run(actor, config, expect_ahead):
            assert actor.reset("mlp", config, 0) == expect_ahead
            steps = [actor.step() for _ in range(config["epochs"])]
            return _without_times(steps), [r.test_logits for r in actor.finalize()]

        plain = run(_FoldActorImpl("mlp", None, shared, folds[:2], "global", 0, "cpu", 1), cfg, 0)
        ahead_actor = _FoldActorImpl("mlp", cfg, shared, folds[:2], "global", 0, "cpu", 1, ahead=3)
        ahead = run(ahead_actor, cfg, 3)
        assert ahead[0] == plain[0]
        for a, b in zip(ahead[1], plain[1]):
            np.testing.assert_array_equal(a, b)
        again = run(ahead_actor, cfg, 0)  # the same config for the next trial: trained anew
        for a, b in zip(again[1], plain[1]):
            np.testing.assert_array_equal(a, b)
        other_plain = run(_FoldActorImpl("mlp", None, shared, folds[:2], "global", 0, "cpu", 1), other, 0)
        mismatch = run(_FoldActorImpl("mlp", cfg, shared, folds[:2], "global", 0, "cpu", 1, ahead=3), other, 0)
        assert mismatch[0] == other_plain[0]
        for a, b in zip(mismatch[1], other_plain[1]):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(mismatch[1][0], plain[1][0])
    finally:
        torch.set_num_threads(threads)


def test_fold_actor_runs_several_epochs_per_call_to_the_same_numbers(manifest, folds):
    """``run(n)`` is ``n`` steps in one call (the tuner's reports between ASHA's rungs):
    the same metrics and logits, epochs trained ahead served first, and it ends after the
    epoch in which the last hosted fold stopped."""
    from serray.training.actors import _FoldActorImpl

    threads = torch.get_num_threads()
    shared = _LocalShared(_inputs(manifest, vector_features(manifest)))
    cfg = registry.get("mlp").config(overrides={**MLP_FAST, "epochs": 7, "patience": 0})
    try:
        stepped = _FoldActorImpl("mlp", cfg, shared, folds[:2], "global", 0, "cpu", 1)
        steps = [stepped.step() for _ in range(cfg["epochs"])]
        assert all(m["stopped"] for m in steps[-1])
        ran = _FoldActorImpl("mlp", cfg, shared, folds[:2], "global", 0, "cpu", 1, ahead=2)
        assert ran.reset("mlp", cfg, 0) == 2
        chunks = [ran.run(3), ran.run(2), ran.run(None)]
        assert [len(c) for c in chunks] == [3, 2, 2]  # the last call ends where both folds stopped
        assert _without_times([m for c in chunks for m in c]) == _without_times(steps)
        for a, b in zip(ran.finalize(), stepped.finalize()):
            np.testing.assert_array_equal(a.test_logits, b.test_logits)
    finally:
        torch.set_num_threads(threads)


def test_fold_groups_balance_the_actors_work_and_cover_every_fold_once(folds):
    from types import SimpleNamespace

    from serray.training.actors import fold_groups

    sizes = [387, 378, 386, 391, 376, 380, 396, 349, 359, 357]  # EmoDB LOSO training parts
    many = [SimpleNamespace(train=range(n), validation=range(100)) for n in sizes]
    groups = fold_groups(many, 5)
    assert sorted(p for g in groups for p in g) == list(range(10)) and [len(g) for g in groups] == [5, 5]
    load = [sum(sizes[p] for p in g) for g in groups]
    assert abs(load[0] - load[1]) <= 10 < abs(sum(sizes[:5]) - sum(sizes[5:]))  # consecutive halves: 1918 vs 1841
    assert fold_groups(many, 3) == fold_groups(many, 3) and max(map(len, fold_groups(many, 3))) == 3
    assert fold_groups(folds, 1) == [[i] for i in range(len(folds))]


def test_fold_resources_pack_folds_onto_actors_that_fit(monkeypatch):
    import ray

    import serray.training.actors as actors

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    assert actors.fold_resources(10) == (5, 1.0, 0.0)  # 2 actors x 5 folds on 2 cores
    assert actors.fold_resources(10, num_cpus=0.5) == (3, 0.5, 0.0)  # 4 actors fit
    assert actors.fold_resources(10, folds_per_actor=1) == (1, 0.2, 0.0)
    assert actors.fold_resources(1) == (1, 2.0, 0.0)
    with pytest.raises(ValueError, match="exceeds"):
        actors.fold_resources(10, num_cpus=3)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}}])
    assert actors.fold_resources(10, device="auto") == (1, 1.6, 0.1)
    assert actors.fold_resources(10, device="cpu") == (1, 1.6, 0.0)
    assert actors.fold_resources(10, num_gpus=0.5) == (5, 8.0, 0.5)  # two half-GPU actors share the CPUs


def test_fold_result_metrics_and_frame(manifest, folds):
    d = _fold_data(manifest, vector_features(manifest), folds[0])
    res = make_trainer("svm", registry.get("svm").config(), d).run()
    df = res.predictions_frame()
    assert set(df["split"]) == {"validation", "test"}
    assert len(df) == len(d.validation) + len(d.test)
    test = df[df["split"] == "test"]
    assert (test["pred"].to_numpy() == np.array(d.classes, dtype=object)[res.test_logits.argmax(1)]).all()
    m = res.metrics()
    assert not math.isnan(m["test_ua"]) and 0 <= m["test_wa"] <= 1


def test_torch_refit_trains_the_test_model_on_training_and_validation(manifest, folds):
    """refit=True: validation logits of the early-stopped model, test logits of a fresh
    model trained on training + validation for the best epoch count (same seed)."""
    from serray.training.trainer import fold_trainer

    torch.set_num_threads(1)
    fs = vector_features(manifest)
    inp = _inputs(manifest, fs)
    f = folds[1]
    cfg = registry.get("mlp").config(overrides=MLP_FAST)
    plain = fold_trainer("mlp", cfg, inp, f, normalize="global", seed=2, device="cpu").run()
    refit = fold_trainer("mlp", {**cfg, "refit": True}, inp, f, normalize="global", seed=2, device="cpu").run()
    assert np.array_equal(plain.validation_logits, refit.validation_logits)
    merged = Fold(index=f.index, name=f.name, train=np.concatenate([f.train, f.validation]), validation=np.array([]),
                  test=f.test, validation_mode="speaker")
    data = build_fold_data(inp.packed, inp.table, merged, "global")
    by_hand = TorchFoldTrainer("mlp", {**cfg, "epochs": plain.best_epoch, "patience": 0}, data, seed=2, device="cpu").run()
    np.testing.assert_array_equal(refit.test_logits, by_hand.test_logits)
    assert not np.allclose(refit.test_logits, plain.test_logits)
    assert refit.model_record == {"refit": "train+validation", "refit_epochs": plain.best_epoch, "n_fit": len(f.train) + len(f.validation)}
    staged = fold_trainer("cnn_lstm", registry.get("cnn_lstm").config(preset="small", overrides={"epochs": 2, "refit": True, "stages": "all@1;lstm+out@1"}),
                          _inputs(manifest, sequence_features(manifest)), f, normalize="global", seed=0, device="cpu").run()
    assert staged.model_record["refit"].startswith("skipped: a multi-stage plan")


def test_class_weight_balanced_is_weighted_cross_entropy_and_changes_training(manifest, folds):
    from serray.models.layers import emotion_cross_entropy
    from serray.training.run import config_id
    from serray.training.trainer import check_config, class_weights

    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    np.testing.assert_allclose(class_weights(y, 4, "balanced"), [10 / 24, 10 / 12, 10 / 4, 10 / 4])  # absent class: n_c = 1
    assert class_weights(y, 3, "none") is None
    with pytest.raises(ValueError, match=r"class_weight must be one of \('none', 'balanced'\)"):
        class_weights(y, 3, "inverse")
    logits, target, w = torch.randn(10, 3), torch.from_numpy(y), torch.tensor([0.5, 1.0, 4.0])
    per = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(emotion_cross_entropy(logits, target, w), (w[target] * per).sum() / w[target].sum())
    assert torch.equal(emotion_cross_entropy(logits, target), torch.nn.functional.cross_entropy(logits, target))
    keep = ~((manifest["emotion"] == manifest["emotion"].iloc[0]) & (manifest.groupby("speaker").cumcount() % 3 != 0))
    man = manifest[keep.to_numpy()].reset_index(drop=True)
    d = _fold_data(man, vector_features(man), make_folds(man, "loso")[2])
    base = registry.get("mlp").config(overrides=MLP_FAST)
    bal = registry.get("mlp").config(overrides={**MLP_FAST, "class_weight": "balanced"})
    a = TorchFoldTrainer("mlp", bal, d, seed=7, device="cpu").run()
    b = TorchFoldTrainer("mlp", bal, d, seed=7, device="cpu").run()
    c = TorchFoldTrainer("mlp", base, d, seed=7, device="cpu").run()
    none = TorchFoldTrainer("mlp", {**base, "class_weight": "none"}, d, seed=7, device="cpu").run()
    np.testing.assert_array_equal(a.test_logits, b.test_logits)
    assert not np.allclose(a.test_logits, c.test_logits)
    np.testing.assert_array_equal(none.test_logits, c.test_logits)  # none is plain cross-entropy
    # the default is not written into configs, so runs made before the key keep their ids
    assert "class_weight" not in check_config("mlp", base)
    assert config_id("mlp", check_config("mlp", base)) != config_id("mlp", check_config("mlp", bal))
    with pytest.raises(ValueError, match=r"class_weight must be one of \('none', 'balanced'\)"):
        TorchFoldTrainer("mlp", registry.get("mlp").config(overrides={**MLP_FAST, "class_weight": "inverse"}), d)
