"""A real two-node Ray cluster on this machine: features and tune run on both nodes, and a
tune experiment survives the death of a node.

The cluster is two ``ray start --block`` processes (see ``tests/_cluster.py``): a head and
a second node with one CPU each, each with its own temp dir and a custom resource naming
it. serray's commands join it with ``--address``, exactly as on a real cluster. Every
process the test started is killed by its PID at the end, never by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from serray import io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cluster import LocalCluster  # noqa: E402

SERRAY = [sys.executable, "-m", "serray"]
N_TRIALS = 4
EPOCHS = 300  # long enough that a trial is still running when the node dies
BUSY = ("ray::_FoldActorImpl.", "ray::FoldsTrainable.")  # process titles of working tune actors

# Early stopping off (patience 0): every trial trains exactly EPOCHS epochs.
SPACE = """\
model: mlp
params:
  lr:       {type: loguniform, low: 1.0e-4, high: 1.0e-2}
  dropout:  {type: uniform, low: 0.0, high: 0.5}
  patience: {type: fixed, value: 0}
"""


def _run(args: list[str], env: dict, timeout: float = 300) -> str:
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _actor_classes(node_temp: Path) -> set[str]:
    """Actor classes whose worker processes ran on the node (from the node's own logs)."""
    names = set()
    for log in node_temp.glob("session_*/logs/worker-*.out"):
        for line in log.read_text(errors="replace").splitlines()[:5]:
            if line.startswith(":actor_name:"):
                names.add(line[len(":actor_name:"):].strip())
    return names


def _records(w: Path, name: str) -> dict[str, dict]:
    d = w / "tune" / name / "trials"
    out = {}
    for p in d.glob("*.json") if d.exists() else []:
        try:
            out[p.stem] = io.read_json(p)
        except ValueError:  # being written (atomic writes make this rare)
            continue
    return out


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_node_cluster_features_tune_and_node_failure(tmp_path):
    # Ray's socket paths must stay short: the cluster lives in a short folder under /tmp.
    root = Path(tempfile.mkdtemp(prefix="srmn", dir="/tmp"))
    cluster = LocalCluster(root)
    env = {**cluster.env, "PYTHONUNBUFFERED": "1"}
    w = tmp_path / "w"
    tune_proc = None
    try:
        cluster.add_node("head_node", head=True)
        cluster.wait_for_nodes({"head_node"})
        cluster.add_node("worker_node")
        node_ids = cluster.wait_for_nodes({"head_node", "worker_node"})
        head_id, worker_id = node_ids["head_node"], node_ids["worker_node"]

        # 1. Features on the cluster: one extraction actor per node (one CPU each).
        _run([*SERRAY, "data", "synth", "--out", str(w), "--speakers", "4", "--per-emotion", "2"], env)
        out = _run([*SERRAY, "features", str(w), "--set", "egemaps", "--address", cluster.address, "--no-progress"], env)
        assert "64 utterances, 0 cached, 64 extracted, 0 failed" in out, out[-2000:]
        for node in cluster.nodes.values():
            assert "ExtractionWorker" in _actor_classes(node.temp_dir), f"no feature actor ran on {node.name}"
        features = _snapshot(w / "features")

        # 2. Tune on the cluster. A trial's 3 fold actors take 0.9 CPU, so each trial fits on
        #    one node and two trials run at once, one per node.
        space = tmp_path / "mlp_patience0.yaml"
        space.write_text(SPACE)
        log_path = tmp_path / "tune.log"
        args = [*SERRAY, "tune", "mlp", "--workdir", str(w), "--features", "egemaps", "--protocol", "kfold",
                "--k", "3", "--num-samples", str(N_TRIALS), "--max-epochs", str(EPOCHS), "--grace-period", str(EPOCHS),
                "--space", str(space), "--address", cluster.address, "--fold-resources", "cpu=0.3",
                "--max-concurrent-trials", "2", "--name", "mn", "--seed", "0"]
        with open(log_path, "w") as log_fh:
            tune_proc = subprocess.Popen(args, env=env, stdout=log_fh, stderr=subprocess.STDOUT)

        # Kill the second node once a trial has finished and the second node is busy with a
        # trial (its fold actors or trainable are executing a method).
        deadline = time.time() + 240
        before: dict[str, dict] = {}
        worker = cluster.nodes["worker_node"]
        seen_titles: set[str] = set()
        while time.time() < deadline and tune_proc.poll() is None:
            recs = _records(w, "mn")
            titles = worker.titles()
            seen_titles.update(t for t in titles if t.startswith("ray::"))
            if recs and len(recs) < N_TRIALS and any(t.startswith(BUSY) for t in titles):
                before = recs
                break
            time.sleep(0.1)
        assert before, f"never saw a busy second node after a finished trial ({sorted(seen_titles)}):\n" + \
            log_path.read_text()[-4000:]
        mtimes = {k: (w / "tune" / "mn" / "trials" / f"{k}.json").stat().st_mtime_ns for k in before}
        cluster.kill_node("worker_node")
        t_kill = time.time()
        assert worker.track() == [], "processes of the killed node still run"

        tune_proc.wait(timeout=300)
        tune_out = log_path.read_text()
        assert tune_proc.returncode == 0, tune_out[-4000:]
        # Ray marks the killed node dead once its health checks time out (seconds).
        cluster.wait_for_nodes({"head_node"}, timeout=120)

        # Every trial completed, none errored; the leaderboard is complete.
        exp = w / "tune" / "mn"
        board = pd.read_csv(exp / "leaderboard.csv")
        assert len(board) == N_TRIALS and board["trial_id"].is_unique, board.to_string()
        assert (board["status"] == "completed").all(), board.to_string()
        assert (board["epochs"] == EPOCHS).all(), board.to_string()
        recs = _records(w, "mn")
        assert set(recs) == set(board["trial_id"].astype(str))

        # Tune work ran on both nodes: each trial's folds stayed on one node; fold actors ran
        # on the second node until it died (its own logs), the head's are in the records.
        for r in recs.values():
            assert len(r["node_ids"]) == 1 and {f["node_id"] for f in r["folds"]} == set(r["node_ids"])
        assert "_FoldActorImpl" in _actor_classes(worker.temp_dir)
        assert head_id in {n for r in recs.values() for n in r["node_ids"]}
        assert {n for r in before.values() for n in r["node_ids"]} <= {head_id, worker_id}

        # Trials finished before the kill are intact (not rerun, records untouched).
        for k, t in mtimes.items():
            assert (exp / "trials" / f"{k}.json").stat().st_mtime_ns == t
        # Trials that ran on the dead node failed there and were retried on the survivor.
        failed = {p.parent.name.split("_")[1] for p in exp.glob("FoldsTrainable_*/error.txt")}
        assert failed, f"no trial failed when the node died (was one running there?):\n{tune_out[-3000:]}"
        assert failed.isdisjoint(before)
        for tid in failed:
            assert recs[tid]["node_ids"] == [head_id], recs[tid]["node_ids"]
            assert (exp / "trials" / f"{tid}.json").stat().st_mtime > t_kill
        # Trials finished after the kill ran on the head only.
        assert all(r["node_ids"] == [head_id] for k, r in recs.items() if k not in before)

        # Cached features are intact, and a new run finds all of them.
        assert _snapshot(w / "features") == features
        out = _run([*SERRAY, "features", str(w), "--set", "egemaps", "--no-progress"], env)
        assert "64 utterances, 64 cached, 0 extracted, 0 failed" in out, out[-2000:]
    finally:
        if tune_proc is not None and tune_proc.poll() is None:
            tune_proc.kill()
            tune_proc.wait(timeout=30)
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    for node in cluster.nodes.values():
        assert node.proc.poll() is not None and node.track() == [], f"{node.name} left processes running"
