"""Benchmark: exhaustive n-choose-k ensemble search at IEMOCAP size.

Builds synthetic logits shaped like a 5-fold IEMOCAP run (5531 utterances pooled for
validation and for test, 4 classes: neutral 1708 / happy+excited 1636 / angry 1103 /
sad 1084) for 30 correlated members (3 variants x 10 seeds, each a noisy copy of a
shared signal), then times in the same process:

1. the naive loop: Python loop over subsets, per subset a numpy float64 sum of the
   members' logits, argmax and scikit-learn ``recall_score(average="macro")`` on the
   validation rows (the selection score only), on a sample of 30-choose-5 subsets;
2. serray's search on one core (``exhaustive_search``, numpy backend, in-process);
3. serray's Ray runner with one task slot, and with every core ("speedup N cores vs
   1 core" compares these two: same code path, same Ray overheads).

It checks that serray and the naive loop pick the same best subset on 200 ranks, then
prints subsets/second, the ratios, the full 30-choose-5 wall time, and the 30-choose-9
time projected from a measured 30-choose-9 sample.

Usage::

    python bench/ensemble.py            # full run (~2-4 min on 2 cores)
    python bench/ensemble.py --quick    # short run
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
from sklearn.metrics import recall_score

from serray.ensemble import Members, distributed_search, exhaustive_search, n_choose_k, unrank_block
from serray.ensemble.search import build_margins, prune_margins
from serray.raycluster import init_ray

CLASSES = ["neutral", "happy", "angry", "sad"]
COUNTS = [1708, 1636, 1103, 1084]  # IEMOCAP 4-class with happy+excited merged: 5531
VARIANTS = ["vanilla", "mtl", "dann"]


def make_members(n_members: int = 30, seed: int = 0) -> Members:
    """Correlated synthetic members: shared per-utterance signal + variant + seed noise."""
    rng = np.random.default_rng(seed)

    def split():
        y = np.repeat(np.arange(len(CLASSES)), COUNTS)
        rng.shuffle(y)
        n = y.shape[0]
        shared = rng.normal(scale=1.0, size=(n, len(CLASSES)))
        shared[np.arange(n), y] += 1.6
        var = rng.normal(scale=0.5, size=(len(VARIANTS), n, len(CLASSES)))
        logits = np.stack(
            [shared + var[m % len(VARIANTS)] + rng.normal(scale=0.7, size=shared.shape) for m in range(n_members)]
        )
        return logits.astype(np.float32), y

    lv, yv = split()
    lt, yt = split()
    variant = [VARIANTS[m % len(VARIANTS)] for m in range(n_members)]
    names = [f"{variant[m]}/best/{m // len(VARIANTS)}" for m in range(n_members)]
    return Members.from_arrays(lv, yv, lt, yt, CLASSES, names=names, variant=variant)


def naive_loop(members: Members, subsets: np.ndarray) -> tuple[float, tuple, float]:
    """The baseline: per-subset numpy sum + sklearn macro recall. Returns (s, best, best UA)."""
    logits, y = members.split("validation")
    best, best_ua = None, -1.0
    t0 = time.perf_counter()
    for subset in subsets:
        pred = logits[list(subset)].astype(np.float64).sum(axis=0).argmax(axis=1)
        ua = recall_score(y, pred, average="macro")
        if ua > best_ua:
            best, best_ua = tuple(int(i) for i in subset), ua
    return time.perf_counter() - t0, best, best_ua


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (smaller samples)")
    ap.add_argument("--members", type=int, default=30)
    ap.add_argument("--naive-subsets", type=int, default=None, help="subsets timed in the naive loop")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    naive_n = args.naive_subsets or (150 if args.quick else 500)
    k9_sample = 100_000 if args.quick else 400_000
    cores = os.cpu_count() or 1
    m = args.members

    members = make_members(m)
    total5 = n_choose_k(m, 5)
    print(f"members: {m}, rows: {members.y_val.shape[0]} validation + {members.y_test.shape[0]} test, "
          f"classes {dict(zip(CLASSES, COUNTS))}")  # fmt: skip
    single = exhaustive_search(members, [1], top=1, backend="numpy")
    print(f"best single member val UA {single['val_ua'].iloc[0]:.4f}; load average {os.getloadavg()[0]:.2f}")
    for k in (5, 9):
        pr = prune_margins(build_margins(members, "logits", "validation"), k)
        print(f"k={k}: {pr.width // (len(CLASSES) - 1)} of {members.y_val.shape[0]} validation rows undecided "
              f"(the rest have the same outcome for every {k}-subset)")  # fmt: skip

    # 1. naive loop on evenly spread 30C5 subsets
    ranks = np.linspace(0, total5 - 1, naive_n).astype(np.int64)
    sample = np.concatenate([unrank_block(int(r), 1, m, 5) for r in ranks])
    naive_s, naive_best, naive_ua = naive_loop(members, sample)
    naive_rate = naive_n / naive_s
    # correctness: on the first 200 ranks both must pick the same best subset and UA
    _, chk_best, chk_ua = naive_loop(members, unrank_block(0, 200, m, 5))
    chk = exhaustive_search(members, [5], top=1, backend="numpy", rank_range=(0, 200))
    assert tuple(chk["indices"].iloc[0]) == chk_best and abs(chk["score"].iloc[0] - chk_ua) < 1e-12, (
        "serray and the naive loop disagree"
    )

    # 2. serray, one core, in-process, full 30C5 (after a warm-up of the same code path)
    exhaustive_search(members, [5], top=10, backend="numpy", rank_range=(0, 20_000))
    t0, c0 = time.perf_counter(), time.process_time()
    board1 = exhaustive_search(members, [5], top=10, backend="numpy")
    one_s, one_cpu = time.perf_counter() - t0, time.process_time() - c0
    one_rate = total5 / one_s

    # 3. Ray: warm the workers (process start, imports), then 1 slot and all cores
    init_ray(num_cpus=cores)
    distributed_search(members, [2], num_tasks=2 * cores, min_task_subsets=1, progress=False)
    t0 = time.perf_counter()
    board_r1 = distributed_search(members, [5], num_cpus=1, progress=False)
    ray1_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    board_rn = distributed_search(members, [5], num_cpus=cores, progress=False)
    rayn_s = time.perf_counter() - t0
    assert board_rn["rank"].tolist() == board1["rank"].tolist() == board_r1["rank"].tolist()

    # 4. 30C9 sample with every core, projected to the full C(30, 9)
    total9 = n_choose_k(m, 9)
    lo = total9 // 2
    t0 = time.perf_counter()
    exhaustive_search(members, [9], top=10, backend="numpy", rank_range=(lo, lo + k9_sample))
    k9_one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    distributed_search(members, [9], top=10, rank_range=(lo, lo + k9_sample), progress=False)
    k9_n_s = time.perf_counter() - t0
    k9_rate = k9_sample / k9_n_s

    print()
    print(f"naive loop (1 core):            {naive_rate:12,.0f} subsets/s  ({naive_n} subsets in {naive_s:.2f} s)")
    print(f"serray numpy (1 core):          {one_rate:12,.0f} subsets/s  (C({m},5)={total5:,} in {one_s:.2f} s)")
    print(f"serray Ray, 1 task slot:        {total5 / ray1_s:12,.0f} subsets/s  ({ray1_s:.2f} s)")
    print(f"serray Ray, {cores} cores:           {total5 / rayn_s:12,.0f} subsets/s  ({rayn_s:.2f} s)")
    print(f"speedup vs naive (1 core): {one_rate / naive_rate:.0f}x")
    print(f"speedup {cores} cores vs 1 core: {ray1_s / rayn_s:.2f}x")
    print(f"  (Ray on {cores} cores vs Ray with 1 task slot; vs in-process 1 core: {one_s / rayn_s:.2f}x)")
    print(f"full 30-choose-5 wall time ({cores} cores): {rayn_s:.2f} s")
    task_cpu = board_rn.attrs["stats"]["task_cpu_seconds"]
    print(f"CPU time per subset: in-process {one_cpu / total5 * 1e6:.1f} us, inside Ray tasks "
          f"{task_cpu / total5 * 1e6:.1f} us; CPU busy during the {cores}-core run "
          f"{task_cpu / (cores * rayn_s):.0%} of {cores} cores")  # fmt: skip
    print(f"30-choose-9 sample: {k9_sample:,} subsets, 1 core {k9_sample / k9_one_s:,.0f}/s, "
          f"{cores} cores {k9_rate:,.0f}/s")  # fmt: skip
    print(f"projected 30-choose-9 time ({total9:,} subsets, {cores} cores): {total9 / k9_rate / 60:.1f} min "
          f"(naive loop: {total9 / naive_rate / 3600:.1f} h)")  # fmt: skip
    best = board1.iloc[0]
    print(f"best 5-subset: val UA {best['val_ua']:.4f}, test UA {best['test_ua']:.4f} ({best['composition']})")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
