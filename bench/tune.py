"""Tuning utilisation: a search of a small model on EmoDB (LOSO), as `serray tune` runs it.

Runs the same search (same seed, same trials) in up to three modes, alternating, and
prints for each the total wall time, the time the folds trained, and their ratio
against the ideal for the cores used:

    utilisation = fold seconds / (wall seconds x cores)

Modes (``--modes``, default all three):
* ``pool``: as `serray tune` runs it: warm fold actors (serray.tune.pool) and a report to
  Tune only where ASHA can act (its rungs and the epoch budget; serray.tune.runner.report_epochs);
* ``epoch``: warm fold actors, a report to Tune after every epoch (--report-every-epoch);
* ``nopool``: a report every epoch and no warm actors (SERRAY_TUNE_POOL=0: each trial's
  first actors start inside it): the design before both.

Two measures of the fold seconds are printed:
* wall: each fold's training, build and inference, timed inside its actor. It grows
  when other work shares the cores (e.g. warm actors training while the driver starts
  Tune), so it overstates utilisation when work overlaps;
* epoch CPU: the CPU time of the folds' epochs only (no build, no final inference).
  It does not grow under contention; it slightly understates the useful work.

It also prints the machine's idle CPU share (from /proc/stat, every 0.5 s; Linux only)
before the first trial and while trials ran: what is idle there is what overlapping more
work could still use; the rest of the gap to 1.0 is CPU spent on other things than the
folds' epochs (imports, Tune's processes, Ray).

Target: utilisation >= 0.85 on 2 cores, for a search of `serray tune`'s default 20 trials
(the default here). A shorter search spends a larger share of its time starting: each
fold actor's torch import (about 2.5 s of CPU, a third of it torch._dynamo, which
torch.optim imports), Ray Tune's import in the driver and in the trainable's process;
with `--trials 8` utilisation is about 0.75. The leaderboards of all modes must be
identical (the script checks it).

Usage:
    python bench/tune.py [--data ../shared/data] [--model mlp] [--trials 20] [--max-epochs 30] [--rounds 1] [--modes pool,epoch]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


class IdleSampler:
    """The machine's idle CPU share, read from /proc/stat every ``period`` seconds in a
    thread (no samples where /proc/stat is missing)."""

    def __init__(self, period: float = 0.5) -> None:
        self.samples: list[tuple[float, float]] = []  # (end of interval, idle share in it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait, all

    def _run(self, period: float) -> None:
        try:
            last = self._read()
        except OSError:
            return
        while not self._stop.wait(period):
            now = self._read()
            self.samples.append((time.time(), (now[0] - last[0]) / max(now[1] - last[1], 1)))
            last = now

    def share(self, start: float, end: float) -> float:
        """Mean idle share of the intervals that lie inside ``(start, end]`` (epoch seconds)."""
        xs = [v for t, v in self.samples if start + 0.5 < t <= end]
        return sum(xs) / len(xs) if xs else float("nan")


def search(w: Path, model: str, features: str, trials: int, max_epochs: int, mode: str, cores: float,
           idle: IdleSampler) -> dict:
    """One search; its figures and its leaderboard's (trial order, test UA) for the check."""
    from serray.training.spec import RunSpec
    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    os.environ["SERRAY_TUNE_POOL"] = "0" if mode == "nopool" else "1"
    name = f"bench-{model}-{mode}-{time.time_ns()}"
    t0, t0_epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
    out = tune_model(RunSpec(w, model, features=features, protocol="loso", seed=0),
                     SearchOptions(num_samples=trials, max_epochs=max_epochs, name=name, report_every_epoch=mode != "pool"),
                     verbose=0)
    wall, driver_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    recs = [json.loads(p.read_text()) for p in (w / "tune" / name / "trials").glob("*.json")]
    first, last = min(r["started_at"] for r in recs), max(r["ended_at"] for r in recs)
    return {
        "mode": mode, "wall": wall, "driver_cpu": driver_cpu, "trials": len(recs),
        "epochs": sum(r["epochs"] for r in recs),
        "fold_s": sum(r["fold_seconds"] for r in recs),
        "fold_cpu": sum(r.get("fold_epoch_cpu_seconds", 0.0) for r in recs),
        "ahead": sum(r.get("epochs_trained_ahead", 0) for r in recs),
        "before_first": first - t0_epoch, "after_last": t0_epoch + wall - last, "cores": cores,
        "idle_before": idle.share(t0_epoch, first), "idle_trials": idle.share(first, last),
        "board": [(round(float(v), 12), round(float(t), 12)) for v, t in zip(out.leaderboard["val_ua"], out.leaderboard["test_ua"])],
        "best": (out.best["val_ua"], out.best["test_ua"]),
    }


def report(r: dict) -> None:
    c = r["cores"]
    mode = {"pool": "warm, rung reports", "epoch": "warm, epoch reports", "nopool": "no pool, epoch reports"}[r["mode"]]
    print(f"{mode:>22}: wall {r['wall']:6.1f} s | utilisation {r['fold_s'] / (r['wall'] * c):.2f} (fold wall) "
          f"{r['fold_cpu'] / (r['wall'] * c):.2f} (epoch CPU) | before the first trial {r['before_first']:4.1f} s, "
          f"after the last {r['after_last']:4.1f} s | "
          f"epochs trained ahead {r['ahead']} | driver CPU {r['driver_cpu']:.1f} s | idle CPU before the first trial "
          f"{r['idle_before']:.0%}, while trials ran {r['idle_trials']:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SERRAY_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--features", default=None, help="default: the model's first feature set")
    ap.add_argument("--trials", type=int, default=20, help="trials per search (serray tune's default)")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1, help="rounds of one search per mode, alternating")
    ap.add_argument("--modes", default="nopool,epoch,pool", help="comma-separated: nopool, epoch, pool (see above)")
    ap.add_argument("--workdir", default=None, help="keep the work directory here (default: a temp dir)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"nopool", "epoch", "pool"}:
        raise SystemExit(f"--modes {args.modes!r}: choose from nopool, epoch, pool")

    import ray

    from serray.corpora import prepare_corpus
    from serray.features import extract_features
    from serray.models import registry
    from serray.raycluster import init_ray
    from serray.training.spec import RunSpec
    from serray.tune.options import SearchOptions, check_search, load_search

    emodb = Path(args.data) / "emodb" / "wav"
    if not emodb.is_dir():
        raise SystemExit(f"EmoDB not found at {emodb}; pass --data (the folder holding emodb/)")
    features = args.features or registry.get(args.model).default_features[0]
    w = Path(args.workdir or tempfile.mkdtemp(prefix="serray-bench-tune-"))
    prepare_corpus("emodb", emodb, w)
    extract_features(w, [features], num_actors=0, progress=False)
    init_ray()
    # untimed: this process's one-off imports for the model check (torch), which only the
    # first search would pay (each `serray tune` pays them once, before Ray starts)
    check_search(load_search(RunSpec(w, args.model, features=features, protocol="loso", seed=0), SearchOptions(), "tune"))
    cores = float(ray.cluster_resources().get("CPU", 1))
    print(f"model {args.model} on {features}, EmoDB LOSO (10 folds), {args.trials} trials, max {args.max_epochs} epochs, "
          f"{cores:.0f} cores, load average {os.getloadavg()[0]:.1f}")
    runs, idle = [], IdleSampler()
    for _ in range(args.rounds):
        for mode in modes:
            runs.append(search(w, args.model, features, args.trials, args.max_epochs, mode, cores, idle))
            report(runs[-1])
    boards = {json.dumps(r["board"]) for r in runs}
    print(f"leaderboards identical across the {len(runs)} searches: {len(boards) == 1}")
    med = {m: sorted(r["wall"] for r in runs if r["mode"] == m)[(args.rounds - 1) // 2] for m in modes}
    for m in modes[:-1]:
        print(f"median wall time, {modes[-1]} / {m}: {med[modes[-1]] / med[m]:.2f}")
    print(f"best validation UA {runs[-1]['best'][0]:.3f}, its test UA {runs[-1]['best'][1]:.3f}; "
          f"load average after {os.getloadavg()[0]:.1f}")
    if not args.workdir:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
