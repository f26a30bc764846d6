"""Benchmark: serray's overhead on a small job against a hand-written script, same run.

The job (issue 21): EmoDB, eGeMAPS functionals, linear SVM, leave-one-speaker-out, pooled
UA. It runs four ways, each as the command-line programs a user would start:

* serray cold: ``serray data prepare``, ``serray features``, ``serray train svm`` on a new
  work directory;
* serray warm: ``serray features`` (a cache hit) then ``serray train svm`` again;
* hand-written cold: one Python process that reads the audio as serray does (mono, 16 kHz
  with soxr) and extracts eGeMAPS with opensmile on a process pool of as many workers as
  serray's feature actors (one per CPU), then fits the same ten
  folds (serray's fold lists, written to a file before the timing) with scikit-learn on a
  process pool of the same size, global z-normalisation from each fold's training part;
* hand-written warm: the same, its features read from its own ``.npz`` cache.

It prints the wall times, serray's ratio to the hand-written script cold and warm (target
<= 1.15), both pooled UAs (a check that both did the same job; they are close, not
identical), and the load average before and after (other processes slow either side).

Usage:
    python bench/overhead.py [--data ../shared/data] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _baseline(folds_file: Path, cache: Path, workers: int) -> None:
    """The hand-written job (runs in its own process; prints ``pooled UA <x>``)."""
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    spec = json.loads(folds_file.read_text())
    paths, labels = spec["paths"], spec["labels"]
    ids = sorted(paths)
    if cache.exists():
        z = np.load(cache)
        x = dict(zip(z["ids"].tolist(), z["x"]))
    else:
        chunks = [ids[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_extract_chunk, [[paths[u] for u in c] for c in chunks]))
        x = {u: row for c, part in zip(chunks, parts) for u, row in zip(c, part)}
        np.savez(cache, ids=np.array(ids), x=np.stack([x[u] for u in ids]))
    with ProcessPoolExecutor(workers) as pool:
        outs = list(pool.map(_fit_fold, [(f, x, labels) for f in spec["folds"]]))
    from sklearn.metrics import balanced_accuracy_score

    y = [labels[u] for out in outs for u in out]
    pred = [p for out in outs for p in out.values()]
    print(f"pooled UA {balanced_accuracy_score(y, pred):.4f}")


def _extract_chunk(files: list[str]) -> list:
    """eGeMAPS of 16 kHz mono audio (soundfile + soxr, as serray reads audio)."""
    import opensmile
    import soundfile as sf
    import soxr

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    out = []
    for f in files:
        data, sr = sf.read(f, dtype="float32", always_2d=True)
        x = soxr.resample(data.mean(axis=1), sr, 16000).astype("float32") if sr != 16000 else data.mean(axis=1)
        out.append(smile.process_signal(x, 16000).to_numpy()[0].astype("float32"))
    return out


def _fit_fold(args: tuple) -> dict:
    import numpy as np
    from sklearn.svm import SVC

    fold, x, labels = args
    xtr = np.stack([x[u] for u in fold["train"]]).astype(np.float64)
    mean, std = xtr.mean(axis=0), xtr.std(axis=0)
    std[std < 1e-8] = 1.0
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731 - float64 statistics, float32 features
    model = SVC(kernel="linear", C=1.0, decision_function_shape="ovr").fit(scale(xtr), [labels[u] for u in fold["train"]])
    xte = np.stack([x[u] for u in fold["test"]]).astype(np.float64)
    return dict(zip(fold["test"], model.predict(scale(xte))))


def _timed(cmds: list[list[str]], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = ""
    for cmd in cmds:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        out += r.stdout
    return time.perf_counter() - t0, out


def _ua(text: str) -> str:
    m = re.search(r"pooled UA (\d\.\d+)", text)
    return m.group(1) if m else "?"


def _write_folds(root: Path, tmp: Path) -> Path:
    """serray's LOSO folds (training and test utterances) for the hand-written script."""
    from serray.corpora import prepare_corpus
    from serray.protocols import make_folds

    m = prepare_corpus("emodb", root, None, check_audio=False).manifest
    folds = make_folds(m, "loso", seed=0)
    spec = {
        "paths": dict(zip(m["utt_id"], m["path"].astype(str))),
        "labels": dict(zip(m["utt_id"], m["emotion"].astype(str))),
        "folds": [{"train": list(map(str, f.train)), "test": list(map(str, f.test))} for f in folds],
    }
    path = tmp / "folds.json"
    path.write_text(json.dumps(spec))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SERRAY_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--repeats", type=int, default=1, help="Rounds of the four runs (A B A B); the best of each is printed.")
    ap.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    workers = os.cpu_count() or 1
    if args.baseline:
        _baseline(args.baseline, args.cache, workers)
        return
    root = args.data / "emodb" / "wav"
    if not root.is_dir():
        sys.exit(f"EmoDB not found at {root}; pass --data or set SERRAY_DATA")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    serray = [sys.executable, "-m", "serray"]
    print(f"load average before: {os.getloadavg()}  cpus: {workers}")
    best: dict[str, float] = {}
    uas: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folds = _write_folds(root, tmp)
        for r in range(args.repeats):
            w, cache = tmp / f"w{r}", tmp / f"feats{r}.npz"
            train = [*serray, "train", "svm", "--workdir", str(w), "--features", "egemaps", "--protocol", "loso"]
            runs = {
                "serray cold": [[*serray, "data", "prepare", "emodb", str(root), "--workdir", str(w)],
                                [*serray, "features", str(w), "--set", "egemaps"], train],
                "script cold": [[sys.executable, __file__, "--baseline", str(folds), "--cache", str(cache)]],
                "serray warm": [[*serray, "features", str(w), "--set", "egemaps"], train],
                "script warm": [[sys.executable, __file__, "--baseline", str(folds), "--cache", str(cache)]],
            }
            for name, cmds in runs.items():
                seconds, out = _timed(cmds, env)
                best[name] = min(best.get(name, float("inf")), seconds)
                uas[name] = _ua(out)
                print(f"round {r + 1}: {name:12s} {seconds:6.1f} s  pooled UA {uas[name]}")
    for kind in ("cold", "warm"):
        ratio = best[f"serray {kind}"] / best[f"script {kind}"]
        print(f"{kind}: serray {best[f'serray {kind}']:.1f} s, hand-written {best[f'script {kind}']:.1f} s, "
              f"ratio {ratio:.2f} (target <= 1.15)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
