"""Scaling of `serray tune` from one to two nodes of a Ray cluster simulated on this machine.

The same small tune (mlp on a synthetic corpus, kfold, early stopping off so every trial
trains the same number of epochs, trials one after another so Optuna proposes the same
configurations in both runs, one CPU per fold actor) runs on a cluster of one node and on
one of two nodes, each node a ``ray start --block`` process limited to one CPU (see
``tests/_cluster.py``). With one node a trial's folds share one actor; with two nodes they
are split over two actors on two nodes. Prints both wall times (the `serray tune`
command, cluster start-up excluded) and the speedup.

Usage:
    python bench/scaling.py [--epochs 150] [--k 4] [--trials 4] [--speakers 8] [--per-emotion 6]

The figures are only meaningful on a machine with at least two otherwise idle cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from _cluster import LocalCluster  # noqa: E402

SERRAY = [sys.executable, "-m", "serray"]
SPACE = """\
model: mlp
params:
  lr:           {type: loguniform, low: 1.0e-4, high: 1.0e-2}
  dropout:      {type: uniform, low: 0.0, high: 0.5}
  hidden_sizes: {type: fixed, value: [512, 256]}
  batch_size:   {type: fixed, value: 16}
  patience:     {type: fixed, value: 0}
"""


def _tune(cluster: LocalCluster, workdir: Path, space: Path, name: str, args: argparse.Namespace) -> float:
    cmd = [*SERRAY, "tune", "mlp", "--workdir", str(workdir), "--features", "egemaps", "--protocol", "kfold",
           "--k", str(args.k), "--num-samples", str(args.trials), "--max-epochs", str(args.epochs),
           "--grace-period", str(args.epochs), "--space", str(space), "--address", cluster.address,
           "--fold-resources", "cpu=1", "--max-concurrent-trials", "1", "--name", name, "--seed", "0"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env={**cluster.env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"serray tune failed on {name}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return seconds


def _run_on(n_nodes: int, workdir: Path, space: Path, args: argparse.Namespace) -> float:
    root = Path(tempfile.mkdtemp(prefix="srsc", dir="/tmp"))  # short: Ray's socket paths
    cluster = LocalCluster(root)
    try:
        names = ["head_node", "worker_node"][:n_nodes]
        for i, name in enumerate(names):
            cluster.add_node(name, head=i == 0, num_cpus=1)
        cluster.wait_for_nodes(set(names))
        return _tune(cluster, workdir, space, f"scaling-{n_nodes}node", args)
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--speakers", type=int, default=8)
    p.add_argument("--per-emotion", type=int, default=6)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from serray.corpora.synth import generate_synthetic_corpus
    from serray.features import extract_features

    with tempfile.TemporaryDirectory(prefix="serray-scaling-") as tmp:
        w = Path(tmp) / "w"
        m = generate_synthetic_corpus(w, n_speakers=args.speakers, utterances_per_emotion=args.per_emotion, seed=0)
        extract_features(w, ["egemaps"], num_actors=0, progress=False)
        space = Path(tmp) / "space.yaml"
        space.write_text(SPACE)
        load = os.getloadavg()[0]
        print(f"corpus: {len(m)} utterances; mlp [512, 256], kfold k={args.k}, {args.trials} trials x "
              f"{args.epochs} epochs, fold actors cpu=1, nodes of 1 CPU each; {os.cpu_count()} cores, "
              f"load average {load:.1f} at start", flush=True)
        one = _run_on(1, w, space, args)
        print(f"1 node : {one:7.1f} s", flush=True)
        two = _run_on(2, w, space, args)
        print(f"2 nodes: {two:7.1f} s", flush=True)
        print(f"speedup: {one / two:.2f}x (target >= 1.6); load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
