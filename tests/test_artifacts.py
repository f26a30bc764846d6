"""Kept fold models (serray.artifacts): every registered model family, kept through the fold
executor and loaded from disk in a fresh object, reproduces its fold's test logits; the
format refuses tampered, missing and code-executing files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serray.artifacts import ArtifactError, read_fold_model, write_fold_model
from serray.models import registry
from serray.protocols import make_folds
from serray.training.data import TrainingInputs, class_list, make_label_table, pack_features
from serray.training.executor import run_folds
from serray.training.resources import Resources

from _training_helpers import TINY, features_of_kind, synth_manifest, vector_features


@pytest.fixture(scope="module")
def manifest():
    m = synth_manifest(n_speakers=4, per_class=4)
    m["naturalness"] = np.where(m["speaker"].str[-1].astype(int) % 2 == 0, "acted", "natural")  # for mtl
    return m


def _train_kept(manifest, name, normalize="global", **extra):
    """One fold of ``name`` trained through the executor with its model kept; (result, inputs, fold)."""
    spec = registry.get(name)
    cfg = spec.config(overrides={**TINY.get(name, {}), **({"epochs": 2} if spec.backend == "torch" else {}), **extra})
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(cfg))
    packed = {r: pack_features(features_of_kind(manifest, i.kind), manifest["utt_id"].tolist()) for r, i in spec.inputs.items()}
    fold = make_folds(manifest, "loso", seed=0, validation="fraction")[0]
    inputs = TrainingInputs(packed, table)
    res = run_folds(spec, cfg, inputs, [fold], normalize=normalize, seed=0, resources=Resources(device="cpu", parallel=False), keep_models=True)[0]
    return res, inputs, fold


def _raw_test(inputs, fold):
    """The fold's test utterances' raw features per role, their speakers and auxiliary codes."""
    idx = inputs.table.index_of(fold.test)
    packed = {r: p.take(idx) for r, p in inputs.packed.items()}
    return packed, np.asarray(inputs.table.speaker)[idx].astype(str), {r: c[idx] for r, c in inputs.table.aux.items()}


@pytest.mark.parametrize("name", registry.names())
def test_kept_model_reproduces_the_folds_test_logits(manifest, tmp_path, name):
    res, inputs, fold = _train_kept(manifest, name)
    assert res.kept is not None and res.kept["model"] == name
    write_fold_model(tmp_path / "m", res.kept, {r: {"set": "synthetic", "params": {}} for r in inputs.packed})
    model = read_fold_model(tmp_path / "m")  # a fresh object: nothing shared with the trainer
    packed, speakers, aux = _raw_test(inputs, fold)
    got = model.logits(packed, speakers=speakers, aux=aux)
    assert got.shape == res.test_logits.shape
    assert np.abs(got - res.test_logits).max() <= 1e-5
    if registry.get(name).fitted_after_training:
        assert model.meta["extra"], "what finalize fitted must be kept"


def test_speaker_normalisation_is_recorded_and_needs_speakers(manifest, tmp_path):
    res, inputs, fold = _train_kept(manifest, "svm", normalize="speaker")
    write_fold_model(tmp_path / "m", res.kept, {"x": {"set": "synthetic", "params": {}}})
    model = read_fold_model(tmp_path / "m")
    assert model.transductive and model.inputs["x"]["normalize"] == "speaker"
    packed, speakers, _ = _raw_test(inputs, fold)
    assert np.abs(model.logits(packed, speakers=speakers) - res.test_logits).max() <= 1e-5
    with pytest.raises(ValueError, match="speaker"):
        model.logits(packed)


def test_keeping_models_changes_no_number(manifest):
    a, _, _ = _train_kept(manifest, "mlp")
    spec = registry.get("mlp")
    cfg = spec.config(overrides={**TINY["mlp"], "epochs": 2})
    table = make_label_table(manifest, class_list(manifest["emotion"]))
    inputs = TrainingInputs({"x": pack_features(vector_features(manifest), manifest["utt_id"].tolist())}, table)
    fold = make_folds(manifest, "loso", seed=0, validation="fraction")[0]
    b = run_folds(spec, cfg, inputs, [fold], normalize="global", seed=0, resources=Resources(device="cpu", parallel=False))[0]
    assert b.kept is None
    assert np.array_equal(a.test_logits, b.test_logits) and np.array_equal(a.validation_logits, b.validation_logits)


def test_tampered_missing_and_code_files_are_refused(manifest, tmp_path):
    res, inputs, _ = _train_kept(manifest, "mlp")
    folder = tmp_path / "m"
    write_fold_model(folder, res.kept, {"x": {"set": "synthetic", "params": {}}})
    read_fold_model(folder)
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weights.safetensors: checksum mismatch"):
        read_fold_model(folder)
    weights.unlink()
    with pytest.raises(ArtifactError, match="weights.safetensors: listed .* but missing"):
        read_fold_model(folder)
    write_fold_model(folder, res.kept, {"x": {"set": "synthetic", "params": {}}})
    (folder / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ArtifactError, match="extra.pkl: a .pkl file can execute code"):
        read_fold_model(folder)


def test_unlisted_estimator_class_is_refused():
    from sklearn.ensemble import RandomForestClassifier

    from serray.artifacts.sklearn_arrays import estimator_arrays, rebuild_estimator

    with pytest.raises(ValueError, match="RandomForestClassifier cannot be kept; allowed classes"):
        estimator_arrays(RandomForestClassifier())
    with pytest.raises(ValueError, match="'Pipeline' is not allowed"):
        rebuild_estimator({"class": "Pipeline", "attrs": {}}, {})
    assert json.dumps(estimator_arrays(__import__("sklearn.svm").svm.SVC())[0])  # unfitted: still JSON-able
