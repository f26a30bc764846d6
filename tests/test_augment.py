"""SpecAugment-style masking of training batches (serray.training.augment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import serray.training.torch_trainer as torch_trainer
from serray.models import registry
from serray.protocols import make_folds
from serray.training.augment import check_augment, mask_batch
from serray.training.config import check_config
from serray.training.data import build_fold_data, class_list, make_label_table, pack_features
from serray.training.run import config_id
from serray.training.trainer import TorchFoldTrainer

from _training_helpers import sequence_features, synth_manifest, vector_features

KEYS = {"time_masks": 2, "time_mask_width": 3, "freq_masks": 1, "freq_mask_width": 2}


def test_sequence_masks_stay_inside_each_samples_length_and_widths():
    x = torch.randn(8, 12, 6) + 10.0  # no value is 0 before masking
    lengths = torch.tensor([12, 12, 9, 7, 5, 12, 3, 10])
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0.0  # padding, as PartBatches pads
    got = mask_batch({"f": x, "v": torch.ones(8, 3)}, {"f": lengths}, {"f": "sequence", "v": "vector"}, KEYS,
                     np.random.default_rng(0))["f"]
    assert torch.equal(x[x == 0], got[x == 0])  # padding untouched
    for i, n in enumerate(lengths.tolist()):
        zero = got[i, :n] == 0
        full_frames = int(zero.all(dim=1).sum())
        full_bins = int(zero.all(dim=0).sum()) if not zero.all() else 0
        assert full_frames <= 2 * 3 and full_bins <= 2  # at most time_masks x width frames, one band of <= 2 bins
        partial = zero & ~zero.all(dim=1, keepdim=True) & ~zero.all(dim=0, keepdim=True)
        assert not partial.any()  # every zero belongs to a whole masked frame or a whole masked bin
    assert (got == 0).sum() > (x == 0).sum()


def test_segment_masks_time_and_frequency_and_vectors_pass_through():
    x = torch.randn(4, 2, 8, 10) + 10.0
    v = torch.randn(4, 3)
    out = mask_batch({"s": x, "v": v}, {}, {"s": "segments", "v": "vector"},
                     {"time_masks": 1, "time_mask_width": 10, "freq_masks": 0, "freq_mask_width": 8}, np.random.default_rng(3))
    assert out["v"] is v
    zero = out["s"] == 0
    # time masks cover every channel and bin of the masked frames
    assert torch.equal(zero.all(dim=(1, 2)), zero.any(dim=(1, 2)))
    assert zero.any()


def _data(kind="sequence"):
    m = synth_manifest(n_speakers=4, per_class=4)
    spec = registry.get("dcnn" if kind == "sequence" else "mlp")
    fs = sequence_features(m) if kind == "sequence" else vector_features(m)
    table = make_label_table(m, class_list(m["emotion"]))
    packed = {spec.primary: pack_features(fs, m["utt_id"].tolist())}
    fold = make_folds(m, "loso", seed=0, validation="fraction")[0]
    return spec, build_fold_data(packed, table, fold, "global")


def _train(spec, data, **over):
    cfg = spec.config(overrides={"epochs": 3, "channels": 8, "hidden": 8, **over})
    tr = TorchFoldTrainer(spec, cfg, data, seed=5, device="cpu")
    return tr.run()


def test_masked_training_is_seeded_changes_training_and_off_by_default():
    spec, data = _data()
    plain, zero = _train(spec, data), _train(spec, data, time_masks=0, freq_masks=0)
    np.testing.assert_array_equal(plain.test_logits, zero.test_logits)
    a, b = _train(spec, data, **KEYS), _train(spec, data, **KEYS)
    np.testing.assert_array_equal(a.test_logits, b.test_logits)  # same seed, same numbers
    assert not np.array_equal(a.test_logits, plain.test_logits)
    # configs that set no augmentation key keep their config id (hashes of the filled config)
    cfg = spec.config(overrides={"epochs": 3})
    assert config_id("dcnn", check_config(spec, cfg)) == config_id("dcnn", {**cfg, **check_config(spec, cfg)})
    assert "time_masks" not in check_config(spec, cfg)


def test_only_training_batches_are_masked(monkeypatch):
    spec, data = _data()
    seen = []
    real = torch_trainer.mask_batch

    def spy(inputs, lengths, kinds, keys, rng):
        seen.append(next(iter(inputs.values())).shape[0])
        return real(inputs, lengths, kinds, keys, rng)

    monkeypatch.setattr(torch_trainer, "mask_batch", spy)
    res = _train(spec, data, batch_size=8, **KEYS)
    epochs = len(res.history)
    n_train = len(data.train)
    assert sum(seen) == epochs * (n_train - (n_train % 8 == 1))  # every training sample once per epoch, nothing else


@pytest.mark.parametrize("bad", [{"time_masks": -1}, {"freq_mask_width": 1.5}, {"time_masks": True}])
def test_bad_augmentation_keys_are_refused_naming_the_key(bad):
    spec = registry.get("dcnn")
    with pytest.raises(ValueError, match=next(iter(bad))):
        check_config(spec, spec.config(overrides=bad))
    with pytest.raises(ValueError, match=next(iter(bad))):
        check_augment(bad)
