"""Tuning utilisation: 8 trials of a small model on EmoDB (LOSO), as `serray tune` runs them.

Prints the total wall time of the search, the sum of the time spent inside fold training
(each fold's training and inference, measured inside the fold actors), and their ratio
against the ideal for the cores used:

    utilisation = sum(fold training seconds) / (wall seconds x cores)

Target: utilisation >= 0.85 on 2 cores. The gap is Ray/Tune overhead: actor start-up,
lock-step round trips per epoch, trial bookkeeping.

Usage:
    python bench/tune.py [--data ../shared/data] [--model mlp] [--trials 8] [--max-epochs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SERRAY_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--features", default=None, help="default: egemaps for vector models, mfb for sequence models")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="keep the work directory here (default: a temp dir)")
    args = ap.parse_args()

    import ray

    from serray.corpora import prepare_corpus
    from serray.features import extract_features
    from serray.models import registry
    from serray.raycluster import init_ray
    from serray.training.spec import RunSpec
    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    emodb = Path(args.data) / "emodb" / "wav"
    if not emodb.is_dir():
        raise SystemExit(f"EmoDB not found at {emodb}; pass --data (the folder holding emodb/)")
    spec = registry.get(args.model)
    features = args.features or spec.default_features[0]
    w = Path(args.workdir or tempfile.mkdtemp(prefix="serray-bench-tune-"))
    prepare_corpus("emodb", emodb, w)
    extract_features(w, [features], num_actors=0, progress=False)
    init_ray()
    cores = float(ray.cluster_resources().get("CPU", 1))
    name = f"bench-{args.model}-{int(time.time())}"
    t0, t0_epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
    out = tune_model(RunSpec(w, args.model, features=features, protocol="loso", seed=0),
                     SearchOptions(num_samples=args.trials, max_epochs=args.max_epochs, name=name), verbose=0)
    wall, driver_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t_end = t0_epoch + wall
    recs = [json.loads(p.read_text()) for p in (w / "tune" / name / "trials").glob("*.json")]
    fold_s = sum(r["fold_seconds"] for r in recs)
    epochs = sum(r["epochs"] for r in recs)
    print(f"model {args.model} on {features}, EmoDB LOSO (10 folds), {len(recs)} trials, {epochs} trial-epochs, {cores:.0f} cores")
    print(f"total wall time of the search : {wall:8.1f} s")
    print(f"sum of fold training time     : {fold_s:8.1f} s")
    print(f"ideal for {cores:.0f} cores              : {wall * cores:8.1f} core-s")
    print(f"utilisation                   : {fold_s / (wall * cores):8.2f}   (target >= 0.85)")
    first, last = min(r["started_at"] for r in recs), max(r["ended_at"] for r in recs)
    print(f"  before the first trial      : {first - t0_epoch:8.1f} s (features, Ray Tune start, first actors)")
    print(f"  trials (first start to end) : {last - first:8.1f} s, utilisation {fold_s / ((last - first) * cores):.2f}")
    print(f"  after the last trial        : {t_end - last:8.1f} s (leaderboard, best.yaml)")
    print(f"  CPU of the Tune driver      : {driver_cpu:8.1f} s ({driver_cpu / wall:.2f} of a core, competing with the folds)")
    print(f"best validation UA {out.best['val_ua']:.3f}, its test UA {out.best['test_ua']:.3f}")
    if not args.workdir:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
