"""serray tune: search space errors before any trial, leaderboard/best.yaml, retries, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.tune.runner import FAULT_ENV

TUNE = ["tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--max-epochs", "3", "--seed", "0"]


def test_malformed_space_fails_before_any_trial(synth_copy, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mlp\nparams:\n  lr: {type: loguniform, low: 0.1, high: 0.01}\n")
    r = CliRunner().invoke(main, [*TUNE, "--workdir", str(synth_copy), "--space", str(bad)])
    assert r.exit_code == 1
    assert "bad.yaml" in r.output and "lr" in r.output and "smaller than high" in r.output
    assert not (synth_copy / "tune").exists()
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model: mlp\nparams:\n  nonsense: {type: uniform, low: 0, high: 1}\n")
    r = CliRunner().invoke(main, [*TUNE, "--workdir", str(synth_copy), "--space", str(unknown)])
    assert r.exit_code == 1 and "nonsense" in r.output and "not hyperparameters of model 'mlp'" in r.output


def _records(w: Path, name: str) -> dict[str, dict]:
    d = w / "tune" / name / "trials"
    return {p.stem: io.read_json(p) for p in d.glob("*.json")} if d.exists() else {}


@pytest.mark.slow
def test_tune_retries_failed_trials_and_resumes_after_interrupt(synth_copy, tmp_path):
    """Every trial raises once (retried by Tune); Ctrl-C halfway; --resume finishes the rest."""
    w = synth_copy
    faults = tmp_path / "faults"
    env = {**os.environ, FAULT_ENV: str(faults), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "serray", *TUNE, "--workdir", str(w), "--num-samples", "4",
            "--max-concurrent-trials", "1", "--name", "exp"]
    log1 = open(tmp_path / "run1.log", "w")
    p = subprocess.Popen(args, env=env, stdout=log1, stderr=subprocess.STDOUT)
    deadline = time.time() + 400
    while time.time() < deadline and p.poll() is None:
        if sum(r["finished"] == "completed" or r["finished"] == "stopped by scheduler" for r in _records(w, "exp").values()) >= 2:
            break
        time.sleep(1)
    assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
    p.send_signal(signal.SIGINT)
    p.wait(timeout=180)
    done_before = {k: v for k, v in _records(w, "exp").items() if v["finished"] == "completed"}
    assert done_before, "no trial had completed before the interrupt"
    mtimes = {k: (w / "tune" / "exp" / "trials" / f"{k}.json").stat().st_mtime_ns for k in done_before}

    r = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    board = pd.read_csv(w / "tune" / "exp" / "leaderboard.csv")
    assert len(board) == 4 and board["trial_id"].is_unique
    assert not board["status"].str.startswith("error").any(), board.to_string()
    # Completed trials were not run again.
    for k, t in mtimes.items():
        assert (w / "tune" / "exp" / "trials" / f"{k}.json").stat().st_mtime_ns == t
    # Every trial raised once and was retried.
    assert {f.stem for f in faults.glob("*.fault")} >= set(board["trial_id"].astype(str))
    # Selection by validation UA; the leaderboard is sorted by it.
    assert board["val_ua"].is_monotonic_decreasing
    best = yaml.safe_load((w / "tune" / "exp" / "best.yaml").read_text())
    assert best["trial_id"] == str(board["trial_id"].iloc[0]) and best["model"] == "mlp"
    assert "test data not used" in best["selection"]
    preds = __import__("serray.predictions", fromlist=["x"]).read_predictions(w, ["exp"])
    assert set(preds["config_id"]) == set(board["trial_id"].astype(str))
    assert set(preds["split"]) == {"validation", "test"}
    # Trial records carry their wall-clock span; Tune's JSON results are written, TensorBoard files are not
    # (no --tensorboard).
    assert all(r["started_at"] <= r["ended_at"] for r in _records(w, "exp").values())
    assert list((w / "tune" / "exp").rglob("result.json"))
    assert not list((w / "tune" / "exp").rglob("events.out.tfevents*"))


def test_set_pins_a_searched_key_for_every_trial(synth_copy):
    """`--set KEY=VALUE` on a key the space searches fixes it (it used to be only the first
    trial's value); a parameter conditional on it is searched only where VALUE enables it."""
    args = ["tune", "svm", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--seed", "0",
            "--workdir", str(synth_copy), "--num-samples", "4", "--set", "kernel=linear", "--set", "C=0.5"]
    r = CliRunner().invoke(main, [*args, "--name", "pinned"])
    assert r.exit_code == 0, r.output
    board = pd.read_csv(synth_copy / "tune" / "pinned" / "leaderboard.csv")
    assert len(board) == 4 and set(board["config/kernel"]) == {"linear"} and set(board["config/C"]) == {0.5}
    assert board["config/gamma"].isna().all() and board["config/class_weight"].nunique(dropna=False) == 2
    best = yaml.safe_load((synth_copy / "tune" / "pinned" / "best.yaml").read_text())
    assert best["config"]["kernel"] == "linear" and best["config"]["C"] == 0.5


def _tune_rows(w: Path, name: str) -> dict[str, list[int]]:
    """Each trial's reported epochs (``training_iteration``), from Tune's result files."""
    import json

    rows = {}
    for f in (w / "tune" / name).rglob("result.json"):
        its = [json.loads(line)["training_iteration"] for line in f.read_text().splitlines() if line.strip()]
        rows[f.parent.name] = its
    return rows


@pytest.mark.slow
def test_same_seed_same_leaderboard_with_reused_trial_actors(synth_copy, monkeypatch):
    """Trial actors (and their fold actors) are reused across trials; a search is still
    reproducible, leaderboard and every logit, with ASHA stopping trials at its rungs,
    whether the fold actors are warm ones that trained the first trial's first epochs
    while Tune started (serray.tune.pool, the default) or start inside each trial, and
    whether trials report to Tune only where ASHA can act (the default) or every epoch."""
    from serray.predictions import read_predictions
    from serray.tune.runner import report_epochs

    args = ["tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--max-epochs", "6",
            "--grace-period", "2", "--seed", "0", "--workdir", str(synth_copy), "--num-samples", "4",
            "--max-concurrent-trials", "1"]
    boards, logits, rows = [], [], []
    for name, pool, extra in (("a", "1", []), ("b", "0", ["--report-every-epoch"])):
        monkeypatch.setenv("SERRAY_TUNE_POOL", pool)
        r = CliRunner().invoke(main, [*args, "--name", name, *extra])
        assert r.exit_code == 0, r.output
        records = sorted((io.read_json(p) for p in (synth_copy / "tune" / name / "trials").glob("*.json")),
                         key=lambda rec: rec["started_at"])
        # warm actors trained the first trial's grace period (2 epochs) before it started
        assert [rec["epochs_trained_ahead"] for rec in records] == ([2, 0, 0, 0] if pool == "1" else [0, 0, 0, 0])
        board = pd.read_csv(synth_copy / "tune" / name / "leaderboard.csv")
        order = dict(zip(board["trial_id"], range(len(board))))
        boards.append(board.drop(columns=["trial_id", "seconds"]).reset_index(drop=True))
        preds = read_predictions(synth_copy, [name])
        preds["rank"] = preds["config_id"].map(order)
        logits.append(preds.sort_values(["rank", "split", "utt_id"])["logits"].map(list).tolist())
        rows.append(_tune_rows(synth_copy, name))
    pd.testing.assert_frame_equal(boards[0], boards[1])
    assert logits[0] == logits[1]
    assert boards[0]["status"].str.startswith("stopped by ASHA").any(), boards[0].to_string()
    # every epoch reported in b; in a, fewer reports, and one at every rung a trial reached
    assert all(its == list(range(1, len(its) + 1)) for its in rows[1].values()), rows[1]
    assert sum(map(len, rows[0].values())) < sum(map(len, rows[1].values())), rows
    for its in rows[0].values():
        assert its == sorted(set(its)) and {e for e in report_epochs(2, 6, 2) if e <= its[-1]} <= set(its), rows[0]


@pytest.mark.parametrize("grace,max_t,rf", [(8, 30, 2), (3, 3, 2), (2, 6, 2), (3, 50, 3), (13, 50, 2), (1, 100, 4), (5, 7, 2)])
def test_reports_end_where_ray_asha_has_its_rungs(grace, max_t, rf):
    from ray.tune.schedulers import ASHAScheduler

    from serray.tune.runner import report_epochs

    asha = ASHAScheduler(time_attr="training_iteration", metric="val_ua", mode="max", max_t=max_t,
                         grace_period=grace, reduction_factor=rf)
    assert set(report_epochs(grace, max_t, rf)) == {m for m, _ in asha._brackets[0]._rungs} | {max_t}


@pytest.mark.slow
def test_objective_is_the_pooled_curve_at_one_common_epoch(synth_copy):
    """Each trial's objective is the best point of its pooled per-epoch validation curve
    (recorded), with the fold-best score beside it; --objective fold-best ranks by the latter;
    a resumed search refuses another objective before any start-up."""
    w = synth_copy
    args = ["tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--max-epochs", "4", "--seed", "0",
            "--workdir", str(w), "--num-samples", "2"]
    r = CliRunner().invoke(main, [*args, "--name", "ce"])
    assert r.exit_code == 0, r.output
    recs = _records(w, "ce")
    board = pd.read_csv(w / "tune" / "ce" / "leaderboard.csv")
    assert len(recs) == 2
    for tid, rec in recs.items():
        curve = rec["val_ua_curve"]
        assert rec["objective_kind"] == "common-epoch" and len(curve) == rec["epochs"]
        assert rec["objective"] == pytest.approx(max(curve)) and rec["common_epoch"] == curve.index(max(curve)) + 1
        row = board[board["trial_id"] == tid].iloc[0]
        assert row["val_ua"] == pytest.approx(rec["objective"]) and row["val_ua_fold_best"] == pytest.approx(rec["val_ua_fold_best"])
    assert "one common epoch" in yaml.safe_load((w / "tune" / "ce" / "best.yaml").read_text())["selection"]
    r = CliRunner().invoke(main, [*args, "--name", "ce", "--resume", "--objective", "fold-best"])
    assert r.exit_code == 1 and "ranked its trials by objective 'common-epoch'" in r.output
    r = CliRunner().invoke(main, [*args, "--name", "fb", "--objective", "fold-best"])
    assert r.exit_code == 0, r.output
    for rec in _records(w, "fb").values():
        assert rec["objective_kind"] == "fold-best" and rec["objective"] == pytest.approx(rec["val_ua_fold_best"])


def test_best_yaml_keeps_the_corpus_selection_for_seeds(synth_copy):
    """A search restricted with --corpus writes the corpora into best.yaml, and `serray seeds
    --config best.yaml` trains on those corpora only (it used to take every manifest of the
    work directory: both synthetic corpora here, 96 utterances instead of 48)."""
    args = ["tune", "svm", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--seed", "0",
            "--corpus", "synth_a", "--workdir", str(synth_copy), "--num-samples", "1", "--name", "one"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    best = yaml.safe_load((synth_copy / "tune" / "one" / "best.yaml").read_text())
    assert best["corpora"] == ["synth_a"] and "train_corpora" not in best
    r = CliRunner().invoke(main, ["seeds", "svm", "--workdir", str(synth_copy), "--config",
                                  str(synth_copy / "tune" / "one" / "best.yaml"), "--n", "1", "--run-prefix", "s"])
    assert r.exit_code == 0, r.output
    assert "corpora=['synth_a']" in r.output
    (record,) = [io.read_json(p) for p in (synth_copy / "runs").glob("s*/record.json")]
    assert record["n_utterances"] == 48
