"""`--track wandb` / `serray track --to wandb` against W&B's real offline store, read back with W&B's own reader."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.tracking import parse_target, track
from serray.training.resources import Resources
from serray.workdir import Workdir


def _train(w, *extra):
    args = ["train", "logreg", "--workdir", str(w), "--features", "egemaps", "--protocol", "kfold", "--k", "3",
            "--sequential", "--no-keep-models", *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r


def _runs(w, source, project="serray", only=None):
    """The source's offline runs (those whose folder ends with ``only``) as W&B's reader reports them, by job type."""
    from serray.tracking_wandb import WandbStore, read_offline_run

    runs = [read_offline_run(f) for f in WandbStore(w, project).folder(source) if f.name.endswith(only or "")]
    by_kind: dict[str, list] = {}
    for r in runs:
        assert r["run"]["run_group"] == source and r["run"]["project"] == project
        by_kind.setdefault(r["run"]["job_type"], []).append(r)
    return by_kind


def _config(run):
    return run["run"]["config"]["update"]


def test_train_track_wandb_groups_the_folds_and_logs_once(synth_copy):
    pytest.importorskip("wandb", reason="--track wandb needs wandb (pip install 'serray[wandb]')")
    w = synth_copy
    r = _train(w, "--run", "lr3", "--track", "wandb:ser")
    assert "tracked lr3: logged (W&B run" in r.output
    record = io.read_json(Workdir(w).run_record("lr3"))
    runs = _runs(w, "lr3", "ser")
    (parent,) = runs["run"]
    assert len(runs["fold"]) == 3 == len(record["metrics"]["folds"])
    assert parent["summary"]["pooled_ua"] == pytest.approx(record["metrics"]["pooled"]["ua"])
    cfg = _config(parent)
    assert cfg["model"] == "logreg" and cfg["k"] == 3 and cfg["config"]["C"] == record["config"]["C"]
    assert {"record.json", "settings.json"} <= set(parent["files"])
    fold0 = next(f for f in runs["fold"] if _config(f)["fold"] == 0)
    assert _config(fold0)["serray_parent"] == parent["run"]["run_id"]
    assert [h["_step"] for h in fold0["history"]] == list(range(1, len(record["history"]["0"]) + 1))
    assert [h["epoch_val_ua"] for h in fold0["history"]] == pytest.approx([e["val_ua"] for e in record["history"]["0"]])
    assert fold0["summary"]["test_ua"] == pytest.approx(record["metrics"]["folds"][0]["test_ua"])
    # unchanged: nothing new; a changed record replaces the offline runs (old folders removed)
    folders = sorted(p.name for p in Workdir(w).wandb_dir.glob("offline-run-*"))
    again = CliRunner().invoke(main, ["track", str(w), "lr3", "--to", "wandb:ser"])
    assert "lr3: unchanged (W&B run" in again.output
    assert sorted(p.name for p in Workdir(w).wandb_dir.glob("offline-run-*")) == folders
    rec_path = Workdir(w).run_record("lr3")
    io.write_json({**record, "metrics": {**record["metrics"], "pooled": {**record["metrics"]["pooled"], "ua": 0.123}}}, rec_path)
    third = CliRunner().invoke(main, ["track", str(w), "lr3", "--to", "wandb:ser"])
    assert "lr3: replaced" in third.output
    now = sorted(p.name for p in Workdir(w).wandb_dir.glob("offline-run-*"))
    assert len(now) == 4 and not set(now) & set(folders)
    root = third.output.split("W&B run ")[1].split(")")[0]
    assert [r["summary"]["pooled_ua"] for r in _runs(w, "lr3", "ser", only=root)["run"]] == [0.123]


def test_a_search_is_a_group_of_trials_and_their_folds(tmp_path):
    pytest.importorskip("wandb", reason="--track wandb needs wandb (pip install 'serray[wandb]')")
    from serray.commands.ensemble import write_ensemble_folder
    from serray.ensemble import run_ensemble_search
    from serray.ensemble.search import Members

    w = Workdir(tmp_path)
    io.write_yaml({"model": "mlp", "experiment": "e1", "trial_id": "t2", "val_ua": 0.6, "config": {"lr": 0.01}},
                  w.tune_best("e1"))
    io.write_text("trial_id,val_ua\nt2,0.6\n", w.tune_leaderboard("e1"))
    for tid, curve in (("t2", [0.4, 0.5, 0.6]),):
        io.write_json({"trial_id": tid, "config": {"lr": 0.01}, "val_ua": curve[-1], "val_ua_curve": curve,
                       "folds": [{"fold": 0, "name": "a", "val_ua": 0.5}]}, w.tune_trials("e1") / f"{tid}.json")
    rng = np.random.default_rng(0)
    members = Members.from_arrays(rng.normal(size=(3, 40, 2)).astype(np.float32), rng.integers(0, 2, 40),
                                  rng.normal(size=(3, 30, 2)).astype(np.float32), rng.integers(0, 2, 30), ["a", "b"],
                                  names=[f"r/c0/{i}" for i in range(3)], variant=["r"] * 3)
    res = run_ensemble_search(members, [1, 2], selection="test-optimistic", resources=Resources(parallel=False), progress=False)
    write_ensemble_folder(res, members, w.ensemble("opt"))
    done = track(tmp_path, ["tune:e1", "ensemble:opt"], parse_target("wandb", tmp_path))
    assert [(d.action, d.tracker) for d in done] == [("logged", "W&B")] * 2
    runs = _runs(tmp_path, "tune:e1")
    assert {k: len(v) for k, v in runs.items()} == {"tune": 1, "trial": 1, "fold": 1}
    (t2,) = runs["trial"]
    assert t2["run"]["display_name"] == "trial t2" and t2["summary"]["val_ua"] == 0.6
    assert [h["val_ua_curve"] for h in t2["history"]] == [0.4, 0.5, 0.6]
    assert {_config(f)["serray_parent"] for f in runs["fold"]} == {t["run"]["run_id"] for t in runs["trial"]}
    assert _config(runs["tune"][0])["best"]["lr"] == 0.01
    (ens,) = _runs(tmp_path, "ensemble:opt")["ensemble"]
    assert "optimistic" in _config(ens)["serray_caveat"].lower()


def test_missing_wandb_fails_before_training_naming_the_extra(synth_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    w = synth_copy
    r = CliRunner().invoke(main, ["train", "logreg", "--workdir", str(w), "--features", "egemaps", "--protocol", "kfold",
                                  "--k", "3", "--sequential", "--run", "never", "--track", "wandb"])
    assert r.exit_code == 1 and "pip install 'serray[wandb]'" in r.output and "Traceback" not in r.output
    assert not Workdir(w).run("never").exists() and not Workdir(w).tracking_dir.exists()
    assert parse_target("wandb", w).experiment == "serray" and parse_target("wandb:p", w).uri == str(Workdir(w).wandb_dir)
