"""Benchmark: feature extraction on EmoDB, sequential loop vs the Ray actor pool.

For each feature set (default eGeMAPS and MFB) the script extracts every EmoDB file
once with a plain sequential loop in this process (one core: torch limited to one
thread; extractor setup included) and once with :func:`serray.features.extract_features`
on a local Ray actor pool (actor start-up, extractor setup in every actor and the cache
writes included; ``ray.init`` itself is timed separately), then runs the extraction again
to time a cache hit. It prints files per second for both, the speedup, the parallel
efficiency (speedup / actors, one core each), and the cache-hit time as a fraction of the
extraction time, and checks that both paths give the same numbers.

Targets (issue 3): parallel efficiency >= 0.8 for eGeMAPS on a 2-core machine; a cache
hit under 5 % of the extraction time. Other processes on the machine lower the
efficiency; the load average is printed before and after. Ray workers run at the
loop's priority (``RAY_worker_niceness=0``; Ray's default is nice 15).

Usage:
    python bench/features.py [--data ../shared/data] [--sets egemaps,mfb] [--num-actors N] [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _busy_cores(seconds: float = 3.0) -> float | None:
    """Cores busy (all processes) over ``seconds``, from /proc/stat; ``None`` off Linux."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals) - idle, sum(vals)

    try:
        b0, t0 = sample()
        time.sleep(seconds)
        b1, t1 = sample()
    except OSError:
        return None
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def _emodb_manifest(data: Path, limit: int | None):
    from serray.corpora import prepare_corpus

    root = data / "emodb" / "wav"
    if not root.is_dir():
        sys.exit(f"EmoDB not found at {root}; pass --data or set SERRAY_DATA")
    m = prepare_corpus("emodb", root, None, check_audio=False).manifest
    return m.iloc[:limit].reset_index(drop=True) if limit else m


def _sequential(name: str, paths: list[str]) -> tuple[float, list[np.ndarray]]:
    import torch

    from serray.audio import load_audio
    from serray.features import get_extractor

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ext = get_extractor(name)
    ext.setup("cpu")
    out = [ext.extract(load_audio(p, sample_rate=ext.sample_rate)) for p in paths]
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SERRAY_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--sets", default="egemaps,mfb")
    ap.add_argument("--num-actors", type=int, default=None, help="default: one per CPU")
    ap.add_argument("--limit", type=int, default=None, help="only the first N files (quick check)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray runs its workers at nice 15 by default; on a machine shared with other work
    # that would compare a nice-0 loop with nice-15 actors. Same priority for both.
    os.environ.setdefault("RAY_worker_niceness", "0")

    import ray

    from serray.features import extract_features, load_features
    from serray.raycluster import init_ray

    sets = [s for s in args.sets.split(",") if s]
    m = _emodb_manifest(args.data, args.limit)
    paths = m["path"].tolist()
    n = len(paths)
    busy = _busy_cores()
    print(
        f"EmoDB: {n} files; {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}; "
        f"cores busy with other work before: {busy if busy is None else round(busy, 2)}"
    )

    seq = {}
    for s in sets:
        seq[s] = _sequential(s, paths)
        print(f"  sequential {s}: {seq[s][0]:.1f} s")

    t0 = time.perf_counter()
    init_ray(None)
    t_init = time.perf_counter() - t0
    n_actors = args.num_actors or int(ray.available_resources().get("CPU", 1))
    print(f"  ray.init: {t_init:.1f} s; {n_actors} actor(s)")

    work = Path(tempfile.mkdtemp(prefix="serray_bench_"))
    par = {}
    for s in sets:
        t0 = time.perf_counter()
        rep = extract_features(work, [s], m, num_actors=n_actors, progress=False)[s]
        par[s] = time.perf_counter() - t0
        assert rep.n_extracted == n and rep.n_failed == 0, rep
        print(f"  Ray pool {s}: {par[s]:.1f} s")
    t0 = time.perf_counter()
    hit = extract_features(work, sets, m, num_actors=n_actors, progress=False)
    t_hit = time.perf_counter() - t0
    assert all(r.n_cached == n and r.n_extracted == 0 for r in hit.values())
    ray.shutdown()

    busy = _busy_cores()
    print(f"load average after: {os.getloadavg()[0]:.2f}; cores busy with other work after: {busy if busy is None else round(busy, 2)}\n")
    header = f"{'set':<8} {'files':>5} {'seq s':>7} {'seq f/s':>8} {'ray s':>7} {'ray f/s':>8} {'speedup':>8} {'effic.':>7} {'max|diff|':>10}"
    print(header)
    print("-" * len(header))
    for s in sets:
        t_seq, ref = seq[s]
        fs = load_features(work, s, m)
        diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(fs.data, ref))
        speedup = t_seq / par[s]
        print(
            f"{s:<8} {n:>5} {t_seq:>7.1f} {n / t_seq:>8.1f} {par[s]:>7.1f} {n / par[s]:>8.1f} "
            f"{speedup:>8.2f} {speedup / n_actors:>7.2f} {diff:>10.2g}"
        )
    total = sum(par.values())
    print(f"\ncache hit ({', '.join(sets)}): {t_hit:.2f} s = {100 * t_hit / total:.1f} % of the extraction time ({total:.1f} s)")
    print(f"parallel efficiency = speedup / {n_actors} actors (one CPU each); targets: eGeMAPS >= 0.8, cache hit < 5 %")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
