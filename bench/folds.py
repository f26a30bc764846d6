"""Benchmark: the 10 LOSO folds of one small torch configuration, sequential vs fold actors.

Runs the same configuration (``dcnn`` preset ``small``: 32-channel dilated convolutions, on
synthetic 40-d log-mel-like sequences of 10 speakers x 100 utterances, 20 epochs without
early stopping so that both runs do the same work)
first sequentially in this process and then as parallel Ray fold actors, in lock-step
(a callback after every epoch, as a search needs) and without (each actor trains its
folds to the end in one call, as `serray train` runs them), and prints the wall times and
the speedups. The sequential run is timed with torch's
default thread count and with one thread; the speedup is reported against the faster
of the two (the honest baseline). The parallel time includes starting the actors
(process start, torch import, fold data) but not starting Ray itself, which a session
pays once. Runs alternate and repeat; the minimum of each kind is reported, which damps
the noise of other processes on a shared machine (the load average is printed).

The default workload is a convolutional model, for which torch's own intra-op threads
already make the sequential run use both cores (1.5x over one thread here), so the fold
actors' gain is bounded by 2 / 1.5; ``--model mlp --preset none --epochs 100`` (an
eGeMAPS-sized MLP, where intra-op threads gain nothing) shows the other end.

Usage:
    python bench/folds.py [--utts-per-speaker 100] [--frames 200] [--epochs 20] [--model dcnn] [--preset small]
                          [--repeats 1] [--cpus N] [--seq-threads 1,2]

Target: speedup >= 1.6 on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

EMOTIONS = ("neutral", "happy", "sad", "angry")


def synthetic(n_speakers: int, per_speaker: int, frames: int, dim: int, seed: int = 0, kind: str = "sequence"):
    """Manifest and packed features (sequences, or eGeMAPS-sized vectors) of a synthetic 4-class corpus."""
    from serray.training.data import PackedFeatures

    rng = np.random.default_rng(seed)
    rows, seqs = [], []
    for s in range(n_speakers):
        for i in range(per_speaker):
            c = i % len(EMOTIONS)
            rows.append({"utt_id": f"bench/s{s}_{i}", "speaker": f"bench_s{s}", "emotion": EMOTIONS[c],
                         "corpus": "bench", "gender": "fm"[s % 2]})
            t = int(rng.integers(frames // 2, frames + 1))
            x = rng.normal(size=(t, dim)).astype(np.float32)
            x[:, c * 4 : c * 4 + 4] += 0.3
            seqs.append(x)
    if kind == "vector":  # one vector per utterance: the frame mean and standard deviation, like functionals
        vecs = np.stack([np.concatenate([x.mean(0), x.std(0)]) for x in seqs]).astype(np.float32)
        return pd.DataFrame(rows), PackedFeatures("vector", vecs, None)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in seqs])]).astype(np.int64)
    return pd.DataFrame(rows), PackedFeatures("sequence", np.concatenate(seqs), offsets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dcnn")
    ap.add_argument("--speakers", type=int, default=10)
    ap.add_argument("--utts-per-speaker", type=int, default=100)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--preset", default="small", help="model preset ('none' for the full default config)")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating repeats; the minimum of each is reported")
    ap.add_argument("--seq-threads", default=None,
                    help="comma-separated torch thread counts for the sequential runs (default: 1 and torch's default)")
    args = ap.parse_args()

    import torch

    from serray.models import registry
    from serray.protocols import make_folds
    from serray.raycluster import init_ray
    from serray.training.actors import fold_resources, run_folds
    from serray.training.data import TrainingInputs, make_label_table

    spec = registry.get(args.model)
    dim = 44 if spec.input_kind == "vector" else 40  # vectors: mean + std of 44 ... 88 values, eGeMAPS-sized
    manifest, packed = synthetic(args.speakers, args.utts_per_speaker, args.frames, dim, kind=spec.input_kind)
    inputs = TrainingInputs(packed, make_label_table(manifest))
    folds = make_folds(manifest, "loso")
    preset = None if args.preset in (None, "", "none") else args.preset
    cfg = spec.config(preset=preset, overrides={"epochs": args.epochs, "patience": 0})
    print(f"{args.model} (preset {args.preset}, {args.epochs} epochs, no early stopping), {len(folds)} LOSO folds, "
          f"{len(manifest)} utterances x "
          f"{f'{packed.data.shape[1]}-d vectors' if packed.kind == 'vector' else f'<= {args.frames} frames x {dim} dims'}; "
          f"{os.cpu_count()} cores")

    # warm-up: first-use imports and allocator, so neither timed run pays them
    run_folds(spec, {**cfg, "epochs": 1}, inputs, folds[:1], parallel=False, device="cpu")

    init_ray(num_cpus=args.cpus)
    per_actor, cpus, _ = fold_resources(len(folds), device="cpu")
    n_actors = -(-len(folds) // per_actor)
    default_threads = torch.get_num_threads()
    wanted = [int(t) for t in args.seq_threads.split(",")] if args.seq_threads else [1, default_threads]
    seq_times: dict[int, list[float]] = {t: [] for t in sorted(set(wanted))}
    par_times: list[float] = []
    free_times: list[float] = []  # the actors without a callback (as `serray train` runs them): no lock-step
    epoch_marks: list[list[float]] = []
    print(f"load average before: {os.getloadavg()[0]:.1f}; {args.repeats} repeat(s), alternating, minimum reported")
    for _ in range(args.repeats):
        for threads in seq_times:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            res = run_folds(spec, cfg, inputs, folds, parallel=False, device="cpu")
            seq_times[threads].append(time.perf_counter() - t0)
            if seq_times[threads][-1] <= min(min(ts) for ts in seq_times.values() if ts):
                seq = res  # results of the fastest sequential run so far
        torch.set_num_threads(default_threads)
        marks: list[float] = []
        t0 = time.perf_counter()
        par = run_folds(spec, cfg, inputs, folds, parallel=True, device="cpu",
                        on_epoch=lambda epoch, metrics: marks.append(time.perf_counter() - t0))
        par_times.append(time.perf_counter() - t0)
        epoch_marks.append(marks)
        t0 = time.perf_counter()
        free = run_folds(spec, cfg, inputs, folds, parallel=True, device="cpu")
        free_times.append(time.perf_counter() - t0)
    for threads, ts in seq_times.items():
        print(f"sequential, torch threads={threads}: {min(ts):7.1f} s   (runs: {', '.join(f'{t:.1f}' for t in ts)})")
    t_par = min(par_times)
    print(f"parallel fold actors ({n_actors} actors x {per_actor} folds, {cpus} CPU each, lock-step, "
          f"actor start-up included): {t_par:7.1f} s   (runs: {', '.join(f'{t:.1f}' for t in par_times)})")
    t_free = min(free_times)
    print(f"parallel fold actors without a per-epoch callback (each trains its folds to the end in one call, "
          f"as `serray train` runs them): {t_free:7.1f} s   (runs: {', '.join(f'{t:.1f}' for t in free_times)}); "
          f"lock-step / this {t_par / t_free:.2f}; the same test logits: "
          f"{all(np.array_equal(a.test_logits, b.test_logits) for a, b in zip(par, free))}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    marks = epoch_marks[int(np.argmin(par_times))]
    later = np.diff(marks).mean() if len(marks) > 1 else float("nan")
    seq_epoch = sum(sum(h["seconds"] for h in r.history) for r in seq) / args.epochs
    print(f"parallel: first lock-step epoch done after {marks[0]:.1f} s (actor start-up: process, torch import, "
          f"fold data; plus epoch 1), later epochs {later:.2f} s each; sequential training time per epoch "
          f"(all folds, fastest sequential run) {seq_epoch:.2f} s -> steady-state speedup {seq_epoch / later:.2f}x")

    cpu_seq = sum(sum(h.get("cpu_seconds", 0.0) for h in r.history) for r in seq)
    cpu_par = sum(sum(h.get("cpu_seconds", 0.0) for h in r.history) for r in par)
    print(f"training CPU time (all folds, load-independent): sequential {cpu_seq:.1f} s, parallel actors {cpu_par:.1f} s; "
          f"on an idle machine the actors' share per core is {cpu_par / n_actors:.1f} s")

    best = min(min(ts) for ts in seq_times.values())
    ua_seq = np.mean([r.metrics()["test_ua"] for r in seq])
    ua_par = np.mean([r.metrics()["test_ua"] for r in par])
    print(f"mean test UA sequential {ua_seq:.4f}, parallel {ua_par:.4f}")
    print(f"speedup (best sequential / parallel): {best / t_par:.2f}x lock-step, {best / t_free:.2f}x without  "
          f"(target >= 1.6 on 2 cores)")
    if 1 in seq_times and best < min(seq_times[1]):
        # one-thread actors, n_actors of them at once, cannot beat n_actors x the one-thread rate
        bound = n_actors * best / min(seq_times[1])
        print(f"upper bound for {n_actors} one-thread actors against the best sequential run (torch's own threads "
              f"already gain {min(seq_times[1]) / best:.2f}x): {bound:.2f}x before actor start-up")


if __name__ == "__main__":
    main()
