"""serray export --refit all-data (issue 39): one model per member (config and seed), retrained on
every training utterance of its run through the fold executor, with the median of the folds'
best epochs; loads and predicts like any export; the same seed gives the same weights; a
cross-corpus run's refit never sees the test corpus; members that cannot be refit are refused
with one line saying what to do."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import serray
from serray.artifacts.export import export_models
from serray.artifacts.refit import refit_epochs
from serray.cli import main
from serray.manifest import load_manifests
from serray.training.resources import Resources
from serray.training.spec import RunSpec
from serray.workdir import Workdir

KFOLD = dict(features="egemaps", protocol="kfold", k=3, corpora=["synth_a"])


@pytest.fixture(scope="module")
def runs(synth_workdir, tmp_path_factory):
    """An svm and a small mlp (3-fold speaker k-fold on synth_a) and a cross-corpus svm
    (synth_a -> synth_b), their fold models kept."""
    from serray.training.run import train_run

    w = tmp_path_factory.mktemp("refit") / "w"
    shutil.copytree(synth_workdir, w, symlinks=True)
    here = Resources(parallel=False)
    train_run(RunSpec(str(w), "svm", **KFOLD), run_name="svm-r", resources=here)
    train_run(RunSpec(str(w), "mlp", preset="small", config={"epochs": 12, "patience": 3}, seed=3, **KFOLD),
              run_name="mlp-r", resources=here)
    train_run(RunSpec(str(w), "svm", features="egemaps", protocol="cross-corpus", train_corpora=["synth_a"],
                      test_corpora=["synth_b"]), run_name="svm-cc", resources=here)
    return w


def _meta(out):
    return json.loads((out / "export.json").read_text())


def _synth_a(w):
    m = load_manifests(w)
    return m[m["corpus"] == "synth_a"]


def test_refit_svm_is_one_model_on_every_speaker_and_predicts(runs, tmp_path):
    out = export_models(runs, "svm-r", tmp_path / "exp", refit="all-data")
    meta, a = _meta(out), _synth_a(runs)
    assert meta["refit"] == "all-data" and meta["members"] == [f"members/svm-r/{p.name}/refit"
                                                                 for p in Workdir(runs).models("svm-r").iterdir()]
    assert not list((out / "members").rglob("fold*")), "a refit export holds no fold models"
    info = next(iter(meta["refit_members"].values()))
    assert info["n_utterances"] == len(a) and info["n_speakers"] == a["speaker"].nunique() and info["epochs"] is None
    assert info["n_held_out"] == 0
    model = json.loads((out / meta["members"][0] / "model.json").read_text())
    assert model["n_train"] == len(a) and model["training"]["refit"] == "all-data" and model["fold"]["index"] == -1
    assert set(meta["files"]) >= {"README.md", f"{meta['members'][0]}/model.json", f"{meta['members'][0]}/arrays.npz"}
    from serray.features import load_features

    feats = np.asarray(load_features(runs, "egemaps", a).data, dtype=np.float64)
    with np.load(out / meta["members"][0] / "arrays.npz") as z:  # statistics of every training utterance
        assert np.allclose(z["norm.x.mean"], feats.mean(axis=0), rtol=1e-6, atol=1e-9)
    card = (out / "README.md").read_text()
    assert "It is not a measurement of the refit models" in card and "test speakers included" in card
    pred = serray.load(out)
    assert len(pred.members) == 1
    table = pred.predict(a["path"].tolist()[:4])
    assert (table["error"] == "").all() and np.allclose(table[[f"prob_{c}" for c in pred.classes]].sum(axis=1), 1.0)


def test_refit_mlp_trains_the_median_best_epoch_and_is_bit_identical(runs, tmp_path):
    from safetensors.torch import load_file

    record = json.loads(Workdir(runs).run_record("mlp-r").read_text())
    best = [f["best_epoch"] for f in record["metrics"]["folds"]]
    want = max(1, int(np.floor(np.median(best) + 0.5)))
    outs = [export_models(runs, "mlp-r", tmp_path / f"exp{i}", refit="all-data") for i in range(2)]
    info = next(iter(_meta(outs[0])["refit_members"].values()))
    assert info["epochs"] == want == info["epochs_trained"] and info["seed"] == 3
    assert info["fold_best_epochs"] == {str(f["fold"]): f["best_epoch"] for f in record["metrics"]["folds"]}
    assert info["n_utterances"] == len(_synth_a(runs))
    a, b = (load_file(str(next(o.rglob("weights.safetensors")))) for o in outs)
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    model = json.loads((outs[0] / _meta(outs[0])["members"][0] / "model.json").read_text())
    assert model["config"]["epochs"] == want and model["config"]["patience"] == 0 and model["seed"] == 3
    assert len(serray.load(outs[0]).members) == 1


def test_refit_epochs_is_the_median_rounded_half_up():
    assert refit_epochs([2, 9, 4]) == 4 and refit_epochs([3, 4]) == 4 and refit_epochs([1, 2, 2, 2]) == 2
    assert refit_epochs([0]) == 1
    with pytest.raises(ValueError, match="at least one fold"):
        refit_epochs([])


def test_model_card_states_a_seed_runs_mean_over_seeds():
    """A seeds run's record has no pooled metrics but the mean and spread over its seeds (before:
    the card said 'pooled test UA n/a')."""
    from serray.artifacts.card import model_card

    record = {"seeds": [0, 1, 2], "settings": {"corpora": ["emodb"]},
              "metrics": {"test_ua_mean": 0.634, "test_ua_std": 0.021, "test_wa_mean": 0.65}}
    card = model_card("run", "sd-base", {}, {"sd-base": record}, [], None)
    assert "test UA 63.4 % (standard deviation 2.1 %), WA 65.0 %, means over 3 seed(s)" in card
    assert "n/a" not in card.split("## Test estimate")[1].split("##")[0] and "Corpora: ['emodb']" in card


def test_cross_corpus_refit_leaves_the_test_corpus_out(runs, tmp_path):
    out = export_models(runs, "svm-cc", tmp_path / "exp", refit="all-data")
    info = next(iter(_meta(out)["refit_members"].values()))
    held_out = len(load_manifests(runs)) - len(_synth_a(runs))
    assert info["corpora"] == ["synth_a"] and info["n_utterances"] == len(_synth_a(runs)) and info["n_held_out"] == held_out
    assert f"never saw the {held_out} utterances that only the test parts held" in (out / "README.md").read_text()


def test_best_epochs_come_from_the_record_when_kept_models_predate_them(runs, tmp_path):
    """Fold models kept before ``training`` was recorded: the run record's best epochs; without a
    record either, the member is refused with what to do, before anything is written."""
    w = tmp_path / "w"
    shutil.copytree(runs, w, symlinks=True)
    for path in Workdir(w).models("mlp-r").rglob("model.json"):
        meta = json.loads(path.read_text())
        meta.pop("training")
        path.write_text(json.dumps(meta))
    out = export_models(w, "mlp-r", tmp_path / "exp", refit="all-data")
    record = json.loads(Workdir(w).run_record("mlp-r").read_text())
    assert next(iter(_meta(out)["refit_members"].values()))["epochs"] == refit_epochs(
        [f["best_epoch"] for f in record["metrics"]["folds"]])
    Workdir(w).run_record("mlp-r").unlink()
    with pytest.raises(ValueError, match=r"no recorded best epoch for fold\(s\) \[0, 1, 2\].*train it again"):
        export_models(w, "mlp-r", tmp_path / "exp2", refit="all-data")
    assert not (tmp_path / "exp2").exists()


def test_cli_refit_progress_and_one_line_errors(runs, tmp_path):
    r = CliRunner().invoke(main, ["export", str(runs), "--runs", "svm-r", "--refit", "all-data", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "refit 1/1: svm-r/" in r.output and "48 utterances of 4 speakers" in r.output
    r = CliRunner().invoke(main, ["export", str(runs), "--runs", "nope", "--refit", "all-data", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "run 'nope' has no kept fold models" in r.output and len(r.output.strip().splitlines()) == 1
    w = tmp_path / "w"
    shutil.copytree(runs, w, symlinks=True)
    Workdir(w).run_settings("svm-r").unlink()
    Workdir(w).run_record("svm-r").unlink()
    r = CliRunner().invoke(main, ["export", str(w), "--runs", "svm-r", "--refit", "all-data", "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "has no settings.json" in r.output and "export without --refit" in r.output
    r = CliRunner().invoke(main, ["export", str(runs), "--runs", "svm-r", "--refit", "some", "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and "'none', 'all-data'" in r.output


def _greedy(w, runs, name, size):
    """A greedy ensemble search over ``runs`` (``size`` additions); ``(k, member names)`` of its largest subset."""
    import pandas as pd

    r = CliRunner().invoke(main, ["ensemble", str(w), "--runs", runs, "--method", "greedy", "--max-size", str(size),
                                  "--name", name])
    assert r.exit_code == 0, r.output
    board = pd.read_parquet(Workdir(w).ensemble(name) / "leaderboard.parquet")
    row = board[board["k"] == board["k"].max()].sort_values("position").iloc[0]
    return int(row["k"]), [str(m) for m in row["members"]]


def _refit_folder(member):
    run, cid, seed = member.split("/")
    return f"members/{run}/{cid}__seed{seed}/refit"


def test_refit_ensemble_has_one_model_per_member(runs, tmp_path):
    k, names = _greedy(runs, "svm-r,mlp-r", "g2", 2)
    assert len(set(names)) == 2  # an svm and an mlp member
    out = export_models(runs, f"ensemble:g2:k={k}", tmp_path / "refit", refit="all-data")
    meta = _meta(out)
    assert sorted(meta["refit_members"]) == sorted(names) and sorted(meta["members"]) == sorted(map(_refit_folder, names))
    pred = serray.load(out)
    assert sorted(m.meta["model"] for m in pred.members) == ["mlp", "svm"]
    assert "chosen on **validation**" in (out / "README.md").read_text()


def test_greedy_ensemble_export_keeps_a_repeated_members_weight(runs, tmp_path):
    """A greedy ensemble of one run picks its member again and again: the export lists it that
    many times (copied or refit once), so its logits count as often in the fusion as in the
    search. Before, exporting such a subset failed on copying the same fold models twice."""
    k, names = _greedy(runs, "svm-r", "g1", 3)
    assert k >= 2 and len(set(names)) == 1
    plain = export_models(runs, f"ensemble:g1:k={k}", tmp_path / "plain")
    assert len(serray.load(plain).members) == 3 * k  # 3 folds per listed member
    assert len(list((plain / "members").rglob("model.json"))) == 3  # stored once
    out = export_models(runs, f"ensemble:g1:k={k}", tmp_path / "refit", refit="all-data")
    meta = _meta(out)
    assert meta["members"] == [_refit_folder(names[0])] * k and meta["refit_members"][names[0]]["times"] == k
    assert f"1 model(s) retrained on all training data, one per configuration and seed, listed {k} times" in (
        out / "README.md").read_text()
    single = export_models(runs, "svm-r", tmp_path / "one", refit="all-data")
    audio = _synth_a(runs)["path"].tolist()[:3]
    cols = [f"prob_{c}" for c in serray.load(single).classes]
    p1 = serray.load(single).predict(audio)[cols].to_numpy()
    pk = serray.load(out).predict(audio)[cols].to_numpy()
    want = p1 ** k / (p1 ** k).sum(axis=1, keepdims=True)  # softmax(k * logits)
    assert np.abs(pk - want).max() <= 1e-5 and np.abs(pk - p1).max() > 1e-3


def test_refit_refuses_folds_that_changed_since_the_run(runs, tmp_path):
    """A manifest that lost utterances since the run: the rebuilt folds differ from folds.parquet."""
    from serray.manifest import write_manifest

    w = tmp_path / "w"
    shutil.copytree(runs, w, symlinks=True)
    a = _synth_a(w)
    write_manifest(a.iloc[1:].reset_index(drop=True), w, "synth_a")
    with pytest.raises(ValueError, match="differ from .*folds.parquet"):
        export_models(w, "svm-r", tmp_path / "exp", refit="all-data")


@pytest.mark.realdata
def test_emodb_svm_refit_export_cli(emodb_dir, tmp_path):
    """Real EmoDB (3 speakers x 7 emotions x 2): an eGeMAPS svm run refit on all of it by the CLI."""
    from serray.corpora import prepare_corpus
    from serray.features import extract_features
    from serray.manifest import write_manifest
    from serray.training.run import train_run

    w = tmp_path / "w"
    prepare_corpus("emodb", emodb_dir, w, check_audio=False)
    m = load_manifests(w)
    small = m[m["speaker"].isin(sorted(m["speaker"].unique())[:3])].groupby(["speaker", "emotion"]).head(2)
    write_manifest(small.reset_index(drop=True), w, "emodb")
    extract_features(w, ["egemaps"], num_actors=0, progress=False)
    train_run(RunSpec(str(w), "svm", features="egemaps", protocol="loso"), run_name="emodb-svm",
              resources=Resources(parallel=False))
    out = tmp_path / "final"
    r = CliRunner().invoke(main, ["export", str(w), "--runs", "emodb-svm", "--refit", "all-data", "--out", str(out)])
    assert r.exit_code == 0, r.output
    info = next(iter(_meta(out)["refit_members"].values()))
    assert info["n_utterances"] == len(small) and info["n_speakers"] == 3 and info["corpora"] == ["emodb"]
    table = serray.load(out).predict(small["path"].tolist()[:3])
    assert (table["error"] == "").all()
