"""serray predict / export on the synthetic corpus: a kept fold model applied to its fold's test
audio reproduces the stored test logits; an export loads without the work directory and is
refused when tampered with; unreadable and too-short files are listed with their reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import serray
from serray.artifacts import ArtifactError
from serray.manifest import load_manifests
from serray.training.spec import RunSpec
from serray.workdir import Workdir
from serray.training.resources import Resources


@pytest.fixture(scope="module")
def trained(synth_workdir, tmp_path_factory):
    """An svm on eGeMAPS, 2-fold speaker k-fold on synth_a, with its fold models kept."""
    import shutil

    from serray.training.run import train_run

    w = tmp_path_factory.mktemp("pred") / "w"
    shutil.copytree(synth_workdir, w, symlinks=True)
    res = train_run(RunSpec(str(w), "svm", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"]),
                    run_name="svm-kept", resources=Resources(parallel=False))
    return w, res


def test_predict_reproduces_each_folds_stored_test_logits(trained):
    w, res = trained
    paths = load_manifests(w).set_index("utt_id")["path"]
    for fold in res.folds:
        folder = next(Workdir(w).models("svm-kept").glob(f"*/fold{fold.index}"))
        table = serray.load(folder).predict(paths.loc[list(fold.test_ids)].tolist())
        assert (table["error"] == "").all() and len(table) == len(fold.test_ids)
        probs = table[[f"prob_{c}" for c in res.classes]].to_numpy()
        z = fold.test_logits.astype(np.float64) - fold.test_logits.max(axis=1, keepdims=True)
        want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        assert np.abs(probs - want).max() <= 1e-5
        assert list(table["label"]) == [res.classes[i] for i in fold.test_logits.argmax(axis=1)]


def test_export_predict_cli_lists_bad_files_and_refuses_tampering(trained, tmp_path):
    from click.testing import CliRunner

    from serray.cli import main

    w, res = trained
    out = tmp_path / "exp"
    r = CliRunner().invoke(main, ["export", str(w), "--runs", "svm-kept", "--out", str(out)])
    assert r.exit_code == 0, r.output
    card = (out / "README.md").read_text()
    assert "pooled test UA" in card and "Nothing: every input is standardised" in card
    audio = sorted(load_manifests(w)["path"])[:3]
    short = tmp_path / "short.wav"
    import soundfile as sf

    sf.write(short, np.zeros(160, dtype=np.float32) + 0.01, 16000)  # 10 ms
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    csv = tmp_path / "p.csv"
    r = CliRunner().invoke(main, ["predict", str(out), *audio, str(short), str(tmp_path / "broken.wav"), "--out", str(csv),
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(csv, keep_default_na=False)
    assert len(table) == 5 and (table["error"] == "").sum() == 3
    assert "too short" in table.loc[table["path"] == str(short), "error"].item()
    assert "unreadable" in table.loc[table["path"] == str(tmp_path / "broken.wav"), "error"].item()
    assert np.allclose(table.loc[table["error"] == "", [f"prob_{c}" for c in res.classes]].astype(float).sum(axis=1), 1.0)
    member = next((out / "members").rglob("arrays.npz"))
    original = member.read_bytes()
    member.write_bytes(original + b"x")
    with pytest.raises(ArtifactError, match="arrays.npz: checksum mismatch"):
        serray.load(out)
    member.write_bytes(original)
    serray.load(out)
    meta = json.loads((out / "export.json").read_text())
    meta["members"].append("members/svm-kept/none__seed0/fold9")
    (out / "export.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="fold9/model.json: member listed in export.json is missing"):
        serray.load(out)


def test_no_keep_models_keeps_nothing(synth_copy):
    from serray.training.run import train_run

    train_run(RunSpec(str(synth_copy), "svm", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"]),
              run_name="svm-nokeep", resources=Resources(parallel=False), keep_models=False)
    assert not Workdir(synth_copy).models("svm-nokeep").exists()
    with pytest.raises(ValueError, match="no kept fold models"):
        serray.artifacts.export_models(synth_copy, "svm-nokeep", synth_copy / "x")


def test_exported_ensemble_reproduces_the_stored_fused_test_scores(trained, tmp_path):
    """Two seeds as members, a validation-selected k=2 subset exported: per fold, the members'
    models of that fold on the fold's test audio give the fused test logits the store holds."""
    from click.testing import CliRunner

    from serray.cli import main
    from serray.predictions import read_predictions
    from serray.training.run import train_run

    w, _ = trained
    spec = dict(features="egemaps", protocol="kfold", k=2, corpora=["synth_a"], config={"C": 0.5})
    for seed in (0, 1):
        train_run(RunSpec(str(w), "logreg", seed=seed, **spec), run_name=f"lr{seed}", resources=Resources(parallel=False))
    r = CliRunner().invoke(main, ["ensemble", str(w), "--runs", "lr0,lr1", "--k", "1-2", "--name", "lr", "--num-cpus", "1"])
    assert r.exit_code == 0, r.output
    out = serray.artifacts.export_models(w, "ensemble:lr:k=2", tmp_path / "exp")
    assert "chosen on **validation**" in (out / "README.md").read_text()
    pred = serray.load(out)
    assert len(pred.members) == 4  # 2 members x 2 folds
    store = read_predictions(w, runs=["lr0", "lr1"], split="test")
    fused = store.groupby(["fold", "utt_id"])["logits"].apply(lambda s: np.sum(np.stack(s.to_numpy()), axis=0))
    paths = load_manifests(w).set_index("utt_id")["path"]
    for fold in sorted(store["fold"].unique()):
        ids = sorted(store.loc[store["fold"] == fold, "utt_id"].unique())
        got = pred.fold(fold).predict(paths.loc[ids].tolist())
        want = np.stack([fused.loc[(fold, u)] for u in ids])
        z = want - want.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        assert np.abs(got[[f"prob_{c}" for c in pred.classes]].to_numpy() - probs).max() <= 1e-5


def test_seeds_keep_each_seeds_fold_models(trained):
    """serray seeds (Ray tasks) keeps every (seed, fold) model; one of them applied to its fold's
    test audio reproduces the stored test logits."""
    import ray

    from serray.predictions import read_predictions
    from serray.raycluster import init_ray
    from serray.training.seeds import train_seeds

    w, _ = trained
    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    try:
        res = train_seeds(RunSpec(str(w), "svm", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"]),
                          seeds=[0, 1], run_prefix="sv", progress=False)
    finally:
        if started:
            ray.shutdown()
    run, cid = res.runs["base"], res.config_id["base"]
    assert all((Workdir(w).fold_model(run, cid, s, k) / "model.json").is_file() for s in (0, 1) for k in (0, 1))
    store = read_predictions(w, runs=[run], split="test")
    part = store[(store["seed"] == 1) & (store["fold"] == 1)].sort_values("utt_id")
    paths = load_manifests(w).set_index("utt_id")["path"]
    pred = serray.load(Workdir(w).fold_model(run, cid, 1, 1))
    got = pred.predict(paths.loc[part["utt_id"]].tolist())
    want = np.stack(part["logits"].to_numpy())
    z = want - want.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert np.abs(got[[f"prob_{c}" for c in pred.classes]].to_numpy() - probs).max() <= 1e-5


def test_speaker_normalised_models_need_a_speaker_column_and_are_marked_transductive(trained, tmp_path):
    from serray.training.run import train_run

    w, _ = trained
    res = train_run(RunSpec(str(w), "svm", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"],
                            normalize="speaker"), run_name="svm-spk", resources=Resources(parallel=False))
    fold = res.folds[0]
    m = load_manifests(w).set_index("utt_id").loc[list(fold.test_ids)].reset_index()
    pred = serray.load(next(Workdir(w).models("svm-spk").glob("*/fold0")))
    with pytest.raises(ValueError, match="give a manifest with a 'speaker' column"):
        pred.predict(m["path"].tolist())
    manifest = tmp_path / "m.csv"
    m[["utt_id", "path", "speaker"]].to_csv(manifest, index=False)
    got = pred.predict([manifest])
    assert got["transductive"].all() and list(got["utt_id"]) == list(fold.test_ids)
    z = fold.test_logits - fold.test_logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert np.abs(got[[f"prob_{c}" for c in pred.classes]].to_numpy() - probs).max() <= 1e-5
