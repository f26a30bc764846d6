"""`serray track` / serray.tracking against a real local MLflow store (runs read back, not mocked)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.tracking import parse_target, track
from serray.workdir import Workdir
from serray.training.resources import Resources

mlflow = pytest.importorskip("mlflow", reason="tracking needs MLflow (pip install 'serray[tracking]')")


def _runs(w, source=None):
    from mlflow.tracking import MlflowClient

    target = parse_target("mlflow", w)
    client = MlflowClient(tracking_uri=target.uri)
    exp = client.get_experiment_by_name("serray")
    flt = f"tags.serray_source = '{source}'" if source else ""
    return client, client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000)


def _train(w, *extra):
    args = ["train", "logreg", "--workdir", str(w), "--features", "egemaps", "--protocol", "kfold", "--k", "3",
            "--sequential", *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r


def test_a_train_run_is_logged_with_folds_and_epochs_and_logged_once(synth_copy):
    w = synth_copy
    _train(w, "--run", "lr3")
    r = CliRunner().invoke(main, ["track", str(w), "lr3"])
    assert r.exit_code == 0, r.output
    assert "lr3: logged" in r.output
    record = io.read_json(Workdir(w).run_record("lr3"))
    client, runs = _runs(w, "lr3")
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    folds = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(folds) == 3 == len(record["metrics"]["folds"])
    p = parents[0].data
    assert p.metrics["pooled_ua"] == pytest.approx(record["metrics"]["pooled"]["ua"])
    assert p.params["model"] == "logreg" and p.params["protocol"] == "kfold" and p.params["k"] == "3"
    assert any(k.startswith("config.") for k in p.params)
    fold0 = next(x for x in folds if x.data.params["fold"] == "0")
    history = client.get_metric_history(fold0.info.run_id, "epoch_val_ua")
    assert [h.step for h in history] == list(range(1, len(record["history"]["0"]) + 1))
    assert "record.json" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    # logging again changes nothing; a changed record replaces its runs, never duplicates them
    again = CliRunner().invoke(main, ["track", str(w), "lr3"])
    assert "lr3: unchanged" in again.output and len(_runs(w, "lr3")[1]) == 4
    rec_path = Workdir(w).run_record("lr3")
    io.write_json({**record, "metrics": {**record["metrics"], "pooled": {**record["metrics"]["pooled"], "ua": 0.123}}}, rec_path)
    third = CliRunner().invoke(main, ["track", str(w), "lr3"])
    assert "lr3: replaced" in third.output
    _, now = _runs(w, "lr3")
    assert len(now) == 4
    assert [x.data.metrics["pooled_ua"] for x in now if "mlflow.parentRunId" not in x.data.tags] == [0.123]


def test_transductive_runs_carry_their_caveat_and_bad_sources_log_nothing(synth_copy):
    w = synth_copy
    _train(w, "--run", "spk", "--normalize", "speaker")
    r = CliRunner().invoke(main, ["track", str(w), "spk", "no-such-run"])
    assert r.exit_code == 1 and "no-such-run" in r.output and "Traceback" not in r.output
    assert not Workdir(w).tracking_dir.exists()  # checked before anything was logged
    track(w, ["spk"], parse_target("mlflow", w))
    _, runs = _runs(w, "spk")
    caveats = {x.data.tags.get("serray_caveat") for x in runs if "mlflow.parentRunId" not in x.data.tags}
    assert len(caveats) == 1 and "transductive" in caveats.pop()


def test_tune_and_ensemble_sources(tmp_path):
    """A search becomes search -> trials -> folds; an optimistic ensemble is named so."""
    from serray.commands.ensemble import write_ensemble_folder
    from serray.ensemble import run_ensemble_search
    from serray.ensemble.search import Members

    w = Workdir(tmp_path)
    io.write_yaml({"model": "mlp", "experiment": "e1", "trial_id": "t2", "val_ua": 0.6, "test_ua": 0.55,
                   "config": {"lr": 0.01, "batch_size": 16}}, w.tune_best("e1"))
    io.write_text("trial_id,val_ua\nt2,0.6\nt1,0.5\n", w.tune("e1") / "leaderboard.csv")
    for tid, curve in (("t1", [0.3, 0.5]), ("t2", [0.4, 0.5, 0.6])):
        io.write_json({"trial_id": tid, "config": {"lr": 0.01}, "objective": curve[-1], "val_ua": curve[-1],
                       "val_ua_curve": curve, "folds": [{"fold": 0, "name": "a", "val_ua": 0.5},
                                                        {"fold": 1, "name": "b", "val_ua": 0.7}]},
                      w.tune_trials("e1") / f"{tid}.json")
    rng = np.random.default_rng(0)
    lv, lt = rng.normal(size=(3, 40, 2)).astype(np.float32), rng.normal(size=(3, 30, 2)).astype(np.float32)
    members = Members.from_arrays(lv, rng.integers(0, 2, 40), lt, rng.integers(0, 2, 30), ["a", "b"],
                                  names=[f"r/c0/{i}" for i in range(3)], variant=["r"] * 3)
    res = run_ensemble_search(members, [1, 2], selection="test-optimistic", resources=Resources(parallel=False), progress=False)
    write_ensemble_folder(res, members, w.ensemble("opt"))
    done = track(tmp_path, ["tune:e1", "ensemble:opt"], parse_target("mlflow", tmp_path))
    assert [d.action for d in done] == ["logged", "logged"]
    client, runs = _runs(tmp_path, "tune:e1")
    by_kind = {k: [x for x in runs if x.data.tags["serray_kind"] == k] for k in ("tune", "trial", "fold")}
    assert [len(by_kind[k]) for k in ("tune", "trial", "fold")] == [1, 2, 4]
    t2 = next(x for x in by_kind["trial"] if x.info.run_name == "trial t2")
    assert [m.value for m in client.get_metric_history(t2.info.run_id, "val_ua_curve")] == [0.4, 0.5, 0.6]
    assert by_kind["tune"][0].data.params["best.lr"] == "0.01"
    _, ens = _runs(tmp_path, "ensemble:opt")
    assert len(ens) == 1 and "optimistic" in ens[0].data.tags["serray_caveat"].lower()
    summary = json.loads(w.ensemble("opt").joinpath("summary.json").read_text())
    assert {k for k, v in summary.items() if isinstance(v, float)} <= set(ens[0].data.metrics)


def test_tracker_choice_and_missing_mlflow(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="choose from: mlflow, mlflow:URI, wandb, wandb:PROJECT"):
        parse_target("neptune", tmp_path)
    assert parse_target("mlflow:sqlite:///x.db", tmp_path).uri == "sqlite:///x.db"
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    io.write_json({"metrics": {}}, Workdir(tmp_path).run_record("r"))
    with pytest.raises(ValueError, match=r"pip install 'serray\[tracking\]'"):
        track(tmp_path, ["r"], parse_target("mlflow", tmp_path))


def test_train_track_option_logs_at_the_end_and_a_bad_tracker_fails_before_training(synth_copy):
    w = synth_copy
    bad = CliRunner().invoke(main, ["train", "logreg", "--workdir", str(w), "--features", "egemaps", "--protocol", "kfold",
                                    "--k", "3", "--sequential", "--run", "never", "--track", "neptune"])
    assert bad.exit_code == 1 and "choose from: mlflow" in bad.output
    assert not Workdir(w).run("never").exists() and not Workdir(w).predictions("never").exists()
    r = _train(w, "--run", "tracked", "--track", "mlflow")
    assert "tracked tracked: logged" in r.output
    _, runs = _runs(w, "tracked")
    assert len(runs) == 4  # the run and its 3 folds
    rep = CliRunner().invoke(main, ["report", str(w), "--runs", "tracked", "--bootstrap", "10"])
    assert rep.exit_code == 0, rep.output
    (name,) = [p.name for p in Workdir(w).reports_dir.iterdir()]
    client, (run,) = _runs(w, f"report:{name}") if track(w, [f"report:{name}"], parse_target("mlflow", w)) else None
    stored = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "summary.csv"} <= stored
