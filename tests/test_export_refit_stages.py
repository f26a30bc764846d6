"""serray export --refit all-data of multi-stage plans and of a search's trials (issue 39): each
stage of a plan trains for the median over folds of the epochs it handed on (nhnn's default
plan: the DCNN, then the group heads, which keep their trained weights without a validation
part; a dcnn fine-tuning plan); the same seed gives the same weights; a stage that cannot be
replayed without validation is refused in one line; a tune experiment's kept trial models
refit from the search's recorded settings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import serray
from serray.artifacts.export import export_models
from serray.artifacts.keep import stage_best_epochs
from serray.artifacts.refit import refit_stage_epochs
from serray.cli import main
from serray.manifest import load_manifests
from serray.training.resources import Resources
from serray.training.spec import RunSpec
from serray.workdir import Workdir

KFOLD = dict(protocol="kfold", k=3, corpora=["synth_a"])
#: Early stopping on a high lr, so the folds' best epochs differ per stage.
SHORT = {"epochs": 10, "patience": 2, "lr": 0.01}


@pytest.fixture(scope="module")
def staged(synth_workdir, tmp_path_factory):
    """An nhnn run (default plan ``nhnn``: all-heads;heads) and a dcnn run with a fine-tuning
    plan, 3-fold speaker k-fold on synth_a, their fold models kept."""
    from serray.features import extract_features
    from serray.training.run import train_run

    w = tmp_path_factory.mktemp("staged") / "w"
    shutil.copytree(synth_workdir, w, symlinks=True)
    extract_features(w, ["mfb"], num_actors=0, progress=False)
    here = Resources(parallel=False)
    train_run(RunSpec(str(w), "nhnn", preset="small", config=SHORT, seed=1, **KFOLD), run_name="nhnn-r", resources=here)
    train_run(RunSpec(str(w), "dcnn", preset="small", seed=2, **KFOLD,
                      config={**SHORT, "stages": "all;fc+out@6*0.5", "stage_selection": "last"}),
              run_name="dcnn-r", resources=here)
    return w


def _kept_stage_epochs(w, run):
    out = {}
    for path in sorted(Workdir(w).models(run).rglob("model.json")):
        meta = json.loads(path.read_text())
        out[str(meta["fold"]["index"])] = meta["training"]["stage_best_epochs"]
    return out


def _medians(per_fold):
    return [int(np.floor(np.median([e[i] for e in per_fold.values()]) + 0.5)) for i in range(2)]


def _only(out):
    meta = json.loads((out / "export.json").read_text())
    (info,) = meta["refit_members"].values()
    return info, json.loads((out / meta["members"][0] / "model.json").read_text())


def _weights(out):
    from safetensors.torch import load_file

    return {k: v.numpy() for k, v in load_file(str(next(out.rglob("weights.safetensors")))).items()}


def _predicts(w, out):
    m = load_manifests(w)
    table = serray.load(out).predict(m[m["corpus"] == "synth_a"]["path"].tolist()[:4])
    probs = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
    assert (table["error"] == "").all() and np.allclose(probs.sum(axis=1), 1.0)


def test_nhnn_default_plan_refits_each_stage_for_its_median(staged, tmp_path):
    per_fold = _kept_stage_epochs(staged, "nhnn-r")
    want = _medians(per_fold)
    assert len(per_fold) == 3 and min(want) >= 1
    outs = [export_models(staged, "nhnn-r", tmp_path / f"e{i}", refit="all-data") for i in range(2)]
    info, model = _only(outs[0])
    assert info["stage_epochs"] == want and info["fold_stage_epochs"] == per_fold
    assert info["epochs"] == sum(want) == info["epochs_trained"] and info["n_utterances"] == 48
    assert model["config"]["stages"] == f"all-heads@{want[0]};heads@{want[1]}" and model["config"]["patience"] == 0
    assert model["training"]["stage_epochs"] == want
    a, b = (_weights(o) for o in outs)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    heads = sorted({k.split(".")[1] for k in a if k.startswith("heads.")})
    assert heads, "the refit fitted its groups on the training features"
    for g in heads:  # without a validation part the heads keep their trained weights, not the shared copy
        assert not np.array_equal(a[f"heads.{g}.fc.weight"], a["shared.fc.weight"])
    assert "per stage" in (outs[0] / "README.md").read_text()
    _predicts(staged, outs[0])


def test_dcnn_fine_tuning_plan_refits_with_its_lr_factor(staged, tmp_path):
    per_fold = _kept_stage_epochs(staged, "dcnn-r")
    want = _medians(per_fold)
    info, model = _only(export_models(staged, "dcnn-r", tmp_path / "e", refit="all-data"))
    assert info["stage_epochs"] == want and info["epochs_trained"] == sum(want)
    assert model["config"]["stages"] == f"all@{want[0]};fc+out@{want[1]}*0.5"
    _predicts(staged, tmp_path / "e")


def test_stage_epochs_of_a_history():
    """Epochs count on across stages; a stage hands on its best epoch counted from its start, all
    its epochs without selection, or nothing when it never beat an earlier stage's best."""
    def rows(stages, bests):
        return [{"epoch": i + 1, "stage": s, "best_epoch": b} for i, (s, b) in enumerate(zip(stages, bests))]

    assert stage_best_epochs(rows([0, 0, 0, 1, 1], [1, 2, 2, 4, 5])) == [2, 2]
    assert stage_best_epochs(rows([0, 0, 1, 1, 2], [2, 2, 2, 2, 5])) == [2, 0, 1]  # stage 2 never improved
    assert stage_best_epochs([{"epoch": 1, "best_epoch": 1}]) == []  # scikit-learn: no stages
    assert refit_stage_epochs({0: [3, 0], 1: [4, 1], 2: [6]}, 2) == [4, 0]


def test_a_stage_that_needs_validation_or_unrecorded_epochs_is_refused(staged, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(staged, w, symlinks=True)
    paths = sorted(Workdir(w).models("dcnn-r").rglob("model.json"))
    for path in paths[:2]:  # most folds' fine-tuning never improved on the first stage's best
        meta = json.loads(path.read_text())
        meta["training"]["stage_best_epochs"] = [5, 0]
        path.write_text(json.dumps(meta))
    r = CliRunner().invoke(main, ["export", str(w), "--runs", "dcnn-r", "--refit", "all-data", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "stage(s) [2]" in r.output and "export without --refit" in r.output and not (tmp_path / "x").exists()
    for path in paths:  # kept before the per-stage epochs were recorded: the run record's histories
        meta = json.loads(path.read_text())
        meta["training"].pop("stage_best_epochs")
        path.write_text(json.dumps(meta))
    info, _ = _only(export_models(w, "dcnn-r", tmp_path / "y", refit="all-data"))
    assert info["fold_stage_epochs"] == _kept_stage_epochs(staged, "dcnn-r")
    Workdir(w).run_record("dcnn-r").unlink()
    with pytest.raises(ValueError, match=r"no recorded epochs per stage for fold\(s\) \[0, 1, 2\]"):
        export_models(w, "dcnn-r", tmp_path / "z", refit="all-data")


TUNE = ["tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "2", "--corpus", "synth_a", "--seed", "0"]


def test_a_searchs_kept_trial_refits_from_the_search_settings(synth_copy, tmp_path):
    """``serray tune`` keeps its best trial's fold models; refit trains that trial's config on
    all of synth_a for the median of its folds' best epochs. Without the search's settings
    (an experiment from before they were recorded) or for a population-based search: one line."""
    r = CliRunner().invoke(main, [*TUNE, "--workdir", str(synth_copy), "--num-samples", "1", "--max-epochs", "3",
                                  "--grace-period", "3", "--name", "kept"])
    assert r.exit_code == 0, r.output
    best = str(pd.read_csv(synth_copy / "tune" / "kept" / "leaderboard.csv")["trial_id"].iloc[0])
    trial = json.loads((synth_copy / "tune" / "kept" / "trials" / f"{best}.json").read_text())
    out = export_models(synth_copy, "kept", tmp_path / "e", refit="all-data")
    info, model = _only(out)
    assert info["member"] == f"kept/{best}/0" and info["n_utterances"] == 48 and info["corpora"] == ["synth_a"]
    assert info["epochs"] == int(np.floor(np.median(trial["best_epochs"]) + 0.5)) == info["epochs_trained"]
    assert all(model["config"][k] == v for k, v in trial["config"].items() if k not in ("epochs", "patience"))
    _predicts(synth_copy, out)
    search = synth_copy / "tune" / "kept" / "serray_search.json"
    settings = json.loads(search.read_text())
    search.write_text(json.dumps({**settings, "scheduler": "pbt"}))
    r = CliRunner().invoke(main, ["export", str(synth_copy), "--runs", "kept", "--refit", "all-data", "--out", str(tmp_path / "p")])
    assert r.exit_code == 1 and "population-based" in r.output and len(r.output.strip().splitlines()) == 1
    search.unlink()
    r = CliRunner().invoke(main, ["export", str(synth_copy), "--runs", "kept", "--refit", "all-data", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "nor search settings" in r.output and len(r.output.strip().splitlines()) == 1
