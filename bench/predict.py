"""Benchmark: `serray predict` against feature extraction alone, on the same files, same run.

Builds two exports from real EmoDB in a temporary work directory (a subset of speakers,
4 classes, eGeMAPS, kfold k=2, trained in this process): an eGeMAPS SVM (``serray export
--runs RUN``: its 2 fold models) and a 10-member MLP ensemble (10 seeds as runs, the
ensemble search of ``serray ensemble --k 10`` run without Ray, ``serray export --runs
ensemble:NAME:k=10``: 10 members x 2 fold models). Then, on the same files of a corpus
the models never saw (EMOVO by default, ``--files`` of them), it times in this process:

- **extraction alone**: the recorded feature set extracted from every file with serray's
  extraction worker (:class:`serray.features.workers.ExtractionWorker`, the path
  ``serray predict`` extracts with; extractor setup included);
- **predict**: ``serray.load(EXPORT).predict(files)`` (loading and checking the export,
  extraction, normalisation, every member's logits, fusion and the output table), as
  ``serray predict`` runs it minus writing the CSV.

One untimed warm-up of each on 4 files goes first (imports, first extractor set-up); the
rounds alternate which goes first. It prints utterances per second of each and the ratio
predict / extraction (medians of the rounds), by wall clock and by this process's CPU
time: everything runs in this one process on one thread, so CPU time is the figure other
processes on a loaded machine disturb least (the load average is printed before and
after). Target (issue 39): prediction adds at most 10 % to extraction time (ratio <= 1.10).

Usage:
    python bench/predict.py [--data ../shared/data] [--files 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]


def _train_exports(data: Path, w: Path, speakers: int) -> dict[str, Path]:
    """The two exports, built from an EmoDB subset in work directory ``w``."""
    from serray.artifacts import export_models
    from serray.training.resources import Resources
    from serray.commands.ensemble import write_ensemble_folder
    from serray.corpora import prepare_corpus
    from serray.ensemble import members_from_predictions, run_ensemble_search
    from serray.features import extract_features
    from serray.manifest import load_manifests, write_manifest
    from serray.predictions import read_predictions, run_classes
    from serray.training.run import train_run
    from serray.training.spec import RunSpec
    from serray.workdir import Workdir

    root = data / "emodb" / "wav"
    if not root.is_dir():
        sys.exit(f"EmoDB not found at {root}; pass --data or set SERRAY_DATA")
    prepare_corpus("emodb", root, w, check_audio=False)
    m = load_manifests(w)
    write_manifest(m[m["speaker"].isin(sorted(m["speaker"].unique())[:speakers])].reset_index(drop=True), w, "emodb")
    extract_features(w, ["egemaps"], num_actors=0, progress=False)
    spec = dict(features="egemaps", protocol="kfold", k=2, labels="4class")
    train_run(RunSpec(str(w), "svm", **spec), run_name="svm", resources=Resources(parallel=False))
    for seed in range(10):
        train_run(RunSpec(str(w), "mlp", seed=seed, preset="small", **spec), run_name=f"mlp{seed}", resources=Resources(parallel=False))
    runs = [f"mlp{s}" for s in range(10)]
    members = members_from_predictions(read_predictions(w, runs), run_classes(w, runs[0]))
    res = run_ensemble_search(members, [10], resources=Resources(parallel=False), progress=False)  # as `serray ensemble --k 10`, no Ray
    write_ensemble_folder(res, members, Workdir(w).ensemble("mlp10"))
    return {"egemaps svm": export_models(w, "svm", w.parent / "export-svm"),
            "mlp ensemble (10)": export_models(w, "ensemble:mlp10:k=10", w.parent / "export-mlp10")}


def _recorded_set(export: Path) -> tuple[str, dict]:
    """The feature set and extractor parameters the export's members record (one set: eGeMAPS)."""
    import serray
    from serray.features.cache import LOAD_PARAMS

    specs = {(s["set"], repr(sorted(s.get("params", {}).items()))): s for m in serray.load(export).members
             for s in m.inputs.values()}
    if len(specs) != 1:
        sys.exit(f"{export}: expected one recorded feature set, found {sorted(specs)}")
    (spec,) = specs.values()
    return spec["set"], {k: v for k, v in spec.get("params", {}).items() if k not in LOAD_PARAMS}


def _extract_alone(files: list[str], name: str, params: dict) -> tuple[float, float]:
    """Seconds to extract the recorded set from ``files`` with the predict path's worker (in chunks of 16, as predict)."""
    from serray.features.workers import ExtractionWorker

    t0, c0 = time.perf_counter(), time.process_time()
    worker = ExtractionWorker(device="cpu")
    items = [(f, f) for f in files]
    failed = []
    for start in range(0, len(items), 16):
        failed += [f"{path}: {err}: {reason}" for _, path, arr, err, reason, _ in worker.run(name, params, items[start:start + 16])
                   if arr is None]
    if failed:
        sys.exit(f"extraction alone: {len(failed)} of {len(files)} files failed, e.g. {failed[0]}")
    return time.perf_counter() - t0, time.process_time() - c0


def _predict(export: Path, files: list[str]) -> tuple[float, float]:
    import serray

    t0, c0 = time.perf_counter(), time.process_time()
    table = serray.load(export).predict(files)
    seconds = time.perf_counter() - t0, time.process_time() - c0
    if (table["error"] != "").any() or len(table) != len(files):
        sys.exit(f"predict with {export}: {int((table['error'] != '').sum())} file(s) not scored")
    return seconds


def _print_table(times: dict[str, list[tuple[float, float]]], n: int, what: str) -> None:
    """utt/s, seconds and the ratio to extraction alone, by wall clock and by this process's CPU time (medians)."""
    base_wall = median(t[0] for t in times["extraction alone"])
    base_cpu = median(t[1] for t in times["extraction alone"])
    print(f"\n{what} (medians; torch 1 thread, no Ray)")
    print(f"{'':20s} {'utt/s':>7s} {'wall s':>7s} {'ratio':>6s} {'CPU s':>7s} {'ratio':>6s}   rounds wall/CPU (s)")
    for name, ts in times.items():
        wall, cpu = median(t[0] for t in ts), median(t[1] for t in ts)
        print(f"{name:20s} {n / wall:7.1f} {wall:7.2f} {wall / base_wall:6.3f} {cpu:7.2f} {cpu / base_cpu:6.3f}   "
              + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SERRAY_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--corpus", default="emovo", help="Folder under --data whose .wav files are predicted (default emovo).")
    ap.add_argument("--files", type=int, default=100, help="How many of its files (sorted; default 100).")
    ap.add_argument("--speakers", type=int, default=6, help="EmoDB speakers the exports are trained on (default 6).")
    ap.add_argument("--rounds", type=int, default=3, help="Alternating rounds of extraction alone and predict.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    files = sorted(str(p) for p in (args.data / args.corpus).rglob("*.wav"))[:args.files]
    if len(files) < args.files:
        sys.exit(f"{args.data / args.corpus}: {len(files)} .wav files, fewer than --files {args.files}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory(prefix="serray-bench-predict-") as tmp:
        t0 = time.perf_counter()
        exports = _train_exports(args.data, Path(tmp) / "w", args.speakers)
        print(f"exports built in {time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{k}: {len(list(p.rglob('model.json')))} fold models" for k, p in exports.items()))
        name, params = _recorded_set(next(iter(exports.values())))
        _extract_alone(files[:4], name, params)  # warm-up, untimed: imports and first extractor set-up
        for path in exports.values():
            _predict(path, files[:4])
        times: dict[str, list[tuple[float, float]]] = {"extraction alone": [], **{k: [] for k in exports}}
        for r in range(args.rounds):  # alternate the order, so neither side always runs first
            order = ["extraction alone", *exports] if r % 2 == 0 else [*exports, "extraction alone"]
            for what in order:
                times[what].append(_extract_alone(files, name, params) if what == "extraction alone"
                                   else _predict(exports[what], files))
        _print_table(times, len(files), f"{len(files)} {args.corpus} files, {args.rounds} rounds")
    print(f"target: predict / extraction <= 1.10; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
