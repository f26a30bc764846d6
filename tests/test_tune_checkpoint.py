"""Checkpoints in searches: a trial whose worker node dies goes on from its checkpoint epoch;
population-based training exploits other trials' checkpoints; a search keeps its best
trial's fold models for serray predict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.training.spec import RunSpec
from serray.tune.trial import FAULT_ENV, FAULT_EPOCH_ENV, FAULT_HANG_ENV

TUNE = ["tune", "mlp", "--features", "egemaps", "--protocol", "kfold", "--k", "2", "--corpus", "synth_a", "--seed", "0"]


def _records(w: Path, name: str) -> dict[str, dict]:
    return {p.stem: io.read_json(p) for p in (w / "tune" / name / "trials").glob("*.json")}


def _wait_for_checkpoint_then_hang(faults: Path, exp: Path, deadline: float) -> None:
    """Until a trial hangs in its first report after epoch 2, its epoch-2 checkpoint saved."""
    while time.time() < deadline and not (faults / "hang.fault").exists():
        time.sleep(0.2)
    while time.time() < deadline and not list(exp.glob("FoldsTrainable_*/checkpoint_*/trial.json")):
        time.sleep(0.2)
    time.sleep(1.0)  # the controller registers the saved checkpoint


@pytest.mark.slow  # a 2-node Ray cluster: ~60 s on a free 2-core machine; the search is bounded to 300 s (a loaded machine)
def test_trial_on_a_killed_worker_node_resumes_from_its_checkpoint_epoch(synth_copy, tmp_path, monkeypatch):
    """Two nodes; each trial (trainable and fold actors) needs the worker's resource. The
    first trial hangs after its epoch-2 checkpoint; the worker node is removed and a fresh
    one added; Tune retries the trial there, and it goes on from epoch 2 (not 1) to the end.
    Bounded: the search must end within 300 s of the start."""
    import ray
    from ray.cluster_utils import Cluster

    from serray.training.resources import Resources
    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    faults = tmp_path / "faults"
    for key, value in ((FAULT_ENV, str(faults)), (FAULT_EPOCH_ENV, "2"), (FAULT_HANG_ENV, "300")):
        monkeypatch.setenv(key, value)  # before the nodes start: their workers inherit it
    deadline = time.time() + 300
    ray.shutdown()  # an earlier test's local Ray: this test's driver joins its own cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    done: dict = {}
    try:
        worker = cluster.add_node(num_cpus=1, resources={"spot": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR")
        exp = synth_copy / "tune" / "ckpt"
        run = RunSpec(str(synth_copy), "mlp", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"], seed=0)
        opts = SearchOptions(num_samples=2, max_epochs=4, grace_period=2, name="ckpt", keep_models="none",
                             resources=Resources(address=cluster.address, fold_cpus=0.4, fold_custom={"spot": 0.01},
                                                 device="cpu"))

        def search() -> None:
            try:
                done["out"] = tune_model(run, opts, max_concurrent_trials=1, max_failures=2, verbose=0)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                done["error"] = exc

        thread = threading.Thread(target=search, daemon=True)
        thread.start()
        _wait_for_checkpoint_then_hang(faults, exp, deadline)
        assert (faults / "hang.fault").exists(), "no trial reached the fault"
        done["killed_at"] = time.time()
        cluster.remove_node(worker)  # node management in the main thread (Ray registers signal handlers)
        cluster.add_node(num_cpus=1, resources={"spot": 1})
        thread.join(timeout=max(1.0, deadline - time.time()))
        assert not thread.is_alive(), "the search did not end in time after the node died"
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in done, done.get("error")
    out = done["out"]
    hung_trial, hung_epoch, _ = (faults / "hang.fault").read_text().split()
    assert int(hung_epoch) == 2
    recs = _records(synth_copy, "ckpt")
    assert len(out.leaderboard) == 2 and out.leaderboard["trial_id"].is_unique
    assert set(out.leaderboard["trial_id"].astype(str)) == set(recs)
    rec = recs[hung_trial]
    assert rec["restored_from_epoch"] == 2 and rec["restores"][-1] == {"epoch": 2, "from_trial": hung_trial}
    assert rec["finished"] == "completed" and rec["epochs"] == 4 and len(rec["val_ua_curve"]) == 4
    assert rec["ended_at"] > done["killed_at"]
    other = next(r for k, r in recs.items() if k != hung_trial)
    assert other["restored_from_epoch"] is None


def test_keep_models_best_reproduces_the_best_trials_stored_test_logits(synth_copy):
    import serray
    from serray.manifest import load_manifests
    from serray.predictions import read_predictions
    from serray.workdir import Workdir

    r = CliRunner().invoke(main, [*TUNE, "--workdir", str(synth_copy), "--num-samples", "2", "--max-epochs", "3",
                                  "--grace-period", "3", "--name", "kept"])
    assert r.exit_code == 0, r.output
    board = pd.read_csv(synth_copy / "tune" / "kept" / "leaderboard.csv")
    best = str(board["trial_id"].iloc[0])
    models = Workdir(synth_copy).models("kept")
    assert sorted(p.name for p in models.iterdir()) == [f"{best}__seed0"], "only the best trial's models are kept"
    preds = read_predictions(synth_copy, ["kept"])
    preds = preds[(preds["config_id"] == best) & (preds["split"] == "test")]
    paths = load_manifests(synth_copy).set_index("utt_id")["path"]
    for fold, part in preds.groupby("fold"):
        table = serray.load(models / f"{best}__seed0" / f"fold{fold}").predict(paths.loc[list(part["utt_id"])].tolist())
        assert (table["error"] == "").all()
        logits = np.stack(part["logits"].to_numpy()).astype(np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
        assert np.abs(probs - z / z.sum(axis=1, keepdims=True)).max() <= 1e-5


@pytest.mark.slow  # PBT pauses and resumes trials through their checkpoints: ~1-2 min on 2 cores
def test_pbt_exploits_a_checkpoint_and_writes_its_leaderboard(synth_copy, tmp_path):
    space = tmp_path / "mlp_pbt.yaml"
    space.write_text("model: mlp\nparams:\n  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}\n"
                     "  dropout: {type: uniform, low: 0.0, high: 0.5}\n  patience: {type: fixed, value: 0}\n")
    # the whole population at once (4 trials x 2 fold actors of 0.25 CPU): PBT compares them every 2 epochs
    r = CliRunner().invoke(main, [*TUNE, "--workdir", str(synth_copy), "--num-samples", "4", "--max-epochs", "8",
                                  "--grace-period", "2", "--scheduler", "pbt", "--space", str(space), "--name", "pbt",
                                  "--keep-models", "all", "--fold-resources", "cpu=0.25"])
    assert r.exit_code == 0, r.output
    board = pd.read_csv(synth_copy / "tune" / "pbt" / "leaderboard.csv")
    recs = _records(synth_copy, "pbt")
    assert len(board) == 4 and set(board["trial_id"].astype(str)) == set(recs)
    exploits = [x for rec in recs.values() for x in rec["restores"] if x["from_trial"] != rec["trial_id"]]
    assert exploits, "no trial went on from another trial's checkpoint"
    assert all(rec["epochs"] == 8 and rec["finished"] == "completed" for rec in recs.values())
    lo, hi = 1e-4, 1e-1
    assert all(lo <= rec["config"]["lr"] <= hi for rec in recs.values())
    assert len(list((synth_copy / "models" / "pbt").iterdir())) == 4  # --keep-models all


@pytest.mark.parametrize("extra, message", [
    (["--nested"], "--scheduler pbt do(es) not apply to --nested"),
    (["--space", "SPACE"], "needs continuous parameters"),
])
def test_pbt_refuses_what_it_cannot_run_in_one_line(synth_copy, tmp_path, extra, message):
    space = tmp_path / "choices.yaml"
    space.write_text("model: mlp\nparams:\n  batch_size: {type: choice, values: [16, 32]}\n")
    extra = [str(space) if x == "SPACE" else x for x in extra]
    r = CliRunner().invoke(main, [*TUNE, "--workdir", str(synth_copy), "--num-samples", "2", "--scheduler", "pbt", *extra])
    assert r.exit_code == 1 and message in r.output, r.output
    assert not (synth_copy / "tune").exists() or not list((synth_copy / "tune").rglob("tuner.pkl"))


@pytest.mark.slow  # two CLI runs with a local Ray each
def test_resume_goes_on_from_the_checkpoint_of_an_interrupted_trial(synth_copy, tmp_path):
    """The driver is SIGKILLed while a trial hangs after its epoch-2 checkpoint; --resume
    continues that trial from epoch 2."""
    w, faults = synth_copy, tmp_path / "faults"
    env = {**os.environ, FAULT_ENV: str(faults), FAULT_EPOCH_ENV: "2", FAULT_HANG_ENV: "600", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "serray", *TUNE, "--workdir", str(w), "--num-samples", "2", "--max-epochs", "4",
            "--grace-period", "2", "--max-concurrent-trials", "1", "--name", "res", "--keep-models", "none"]
    log = tmp_path / "run1.log"
    p = subprocess.Popen(args, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_checkpoint_then_hang(faults, w / "tune" / "res", time.time() + 300)
        assert (faults / "hang.fault").exists(), log.read_text()[-3000:]
        time.sleep(2.0)  # Tune's experiment state (saved every second) knows the checkpoint
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    hung, epoch, pid = (faults / "hang.fault").read_text().split()
    try:
        os.kill(int(pid), signal.SIGKILL)  # the hanging trial's process (Ray gives it its own process group)
    except ProcessLookupError:
        pass
    time.sleep(2)
    r = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "(1 from their last checkpoint" in out, out[-3000:]
    recs = _records(w, "res")
    board = pd.read_csv(w / "tune" / "res" / "leaderboard.csv")
    assert len(board) == 2 and set(board["trial_id"].astype(str)) == set(recs)
    assert int(epoch) == 2 and recs[hung]["restored_from_epoch"] == 2 and recs[hung]["epochs"] == 4


@pytest.mark.slow  # two searches with a local Ray each
def test_a_trial_that_raises_is_retried_from_its_checkpoint_with_the_uninterrupted_logits(synth_copy, tmp_path):
    """Every trial raises once after its epoch-2 checkpoint; Tune retries it on a new actor,
    which goes on from epoch 2 (not finalised as stopped), and every logit equals that of
    the same search without faults."""
    from serray.predictions import read_predictions

    w = synth_copy
    args = [sys.executable, "-m", "serray", *TUNE, "--workdir", str(w), "--num-samples", "2", "--max-epochs", "4",
            "--grace-period", "2", "--max-concurrent-trials", "1", "--keep-models", "none"]
    faults = tmp_path / "faults"
    for name, extra in (("plain", {}), ("faulty", {FAULT_ENV: str(faults), FAULT_EPOCH_ENV: "2"})):
        r = subprocess.run([*args, "--name", name], env={**os.environ, **extra}, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    recs = _records(w, "faulty")
    assert {p.stem for p in faults.glob("*.fault")} == set(recs)  # every trial raised once
    assert all(r["restored_from_epoch"] == 2 and r["epochs"] == 4 and r["finished"] == "completed" for r in recs.values())
    board = pd.read_csv(w / "tune" / "faulty" / "leaderboard.csv")
    assert len(board) == 2 and not board["status"].str.startswith("error").any()

    def logits(name: str) -> dict:
        by_lr = {tid: round(r["config"]["lr"], 12) for tid, r in _records(w, name).items()}
        df = read_predictions(w, [name])
        return {(by_lr[c], s, f, u): tuple(v) for c, s, f, u, v in
                zip(df["config_id"], df["split"], df["fold"], df["utt_id"], df["logits"])}

    assert logits("faulty") == logits("plain")
