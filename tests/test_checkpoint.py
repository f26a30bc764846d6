"""Fold-trainer checkpoints: a trainer restored from a saved state in a fresh process-like
trainer continues exactly as the uninterrupted one (same logits on CPU, fixed seed)."""

from __future__ import annotations

import numpy as np
import pytest

from serray.protocols import make_folds
from serray.training.data import TrainingInputs, make_label_table, pack_features
from serray.training.state import pack_state, unpack_state
from serray.training.trainer import fold_trainer

from _training_helpers import synth_manifest, vector_features

# dropout, an lr schedule, augmentation-free shuffling, early stopping that can trigger
MLP = {"hidden_sizes": [8], "lr": 0.01, "dropout": 0.3, "epochs": 7, "patience": 3, "batch_size": 8, "lr_decay": 0.9}


@pytest.fixture(scope="module")
def setup():
    man = synth_manifest(n_speakers=4, per_class=4)
    inputs = TrainingInputs(pack_features(vector_features(man), man["utt_id"].tolist()), make_label_table(man))
    return inputs, make_folds(man, "loso")[1]


def _trainer(setup, config, seed=3):
    inputs, fold = setup
    return fold_trainer("mlp", config, inputs, fold, normalize="global", seed=seed, device="cpu")


def _straight(setup, config):
    tr = _trainer(setup, config)
    while not tr.stopped:
        tr.step()
    return tr.finalize(), tr.history


@pytest.mark.parametrize("config, at", [
    (MLP, 2),
    ({**MLP, "optimizer": "sgd", "momentum": 0.9, "patience": 0}, 4),
    ({**MLP, "stages": "finetune_out", "epochs": 3, "patience": 0}, 4),  # restored inside the second stage
])
def test_restored_trainer_gives_the_uninterrupted_logits(setup, config, at):
    straight, history = _straight(setup, config)
    first = _trainer(setup, config)
    for _ in range(at):
        first.step()
    blob, text = pack_state(first.state_dict())  # safetensors + JSON, as a checkpoint stores them
    del first
    resumed = _trainer(setup, config)
    resumed.load_state_dict(unpack_state(blob, text))
    while not resumed.stopped:
        resumed.step()
    res = resumed.finalize()
    assert res.epochs == straight.epochs and res.best_epoch == straight.best_epoch
    np.testing.assert_array_equal(res.validation_logits, straight.validation_logits)
    np.testing.assert_array_equal(res.test_logits, straight.test_logits)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in history]


def test_a_restore_without_the_rng_state_would_differ(setup):
    """The check above can fail: the same weights with a fresh RNG stream train differently."""
    straight, _ = _straight(setup, MLP)
    first = _trainer(setup, MLP)
    first.step()
    tensors, meta = first.state_dict()
    other = _trainer(setup, MLP, seed=4)
    meta = {**meta, "np_rng": other.state_dict()[1]["np_rng"]}
    tensors = {**tensors, "rng.torch": other.state_dict()[0]["rng.torch"]}
    resumed = _trainer(setup, MLP)
    resumed.load_state_dict((tensors, meta))
    while not resumed.stopped:
        resumed.step()
    assert not np.array_equal(resumed.finalize().test_logits, straight.test_logits)


def test_a_new_lr_rescales_the_restored_optimiser(setup):
    """Population-based training loads another trial's state under its own (mutated) config."""
    first = _trainer(setup, MLP)
    first.step()
    state = unpack_state(*pack_state(first.state_dict()))
    resumed = _trainer(setup, {**MLP, "lr": 2 * first.config["lr"], "weight_decay": 0.5})
    resumed.load_state_dict(state)
    want = [2 * g["lr"] for g in first.optimizer.param_groups]
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(want)
    assert all(g["weight_decay"] == 0.5 for g in resumed.optimizer.param_groups)


def test_a_state_of_another_fold_is_refused(setup):
    inputs, _ = setup
    first = _trainer(setup, MLP)
    first.step()
    other = fold_trainer("mlp", MLP, inputs, make_folds(synth_manifest(n_speakers=4, per_class=4), "loso")[2],
                         normalize="global", seed=3, device="cpu")
    with pytest.raises(ValueError, match="does not fit"):
        other.load_state_dict(first.state_dict())
