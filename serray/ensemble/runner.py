"""Distributed exhaustive ensemble search on Ray, and the one-call API for the CLI.

The rank space ``[0, C(M, k))`` of every k is split into contiguous ranges, one Ray task
per range. Each task unranks its first subset and walks its range with the vectorised
evaluator of :mod:`serray.ensemble.search`, keeping its own top-m list; the driver
merges the lists deterministically (score descending, then rank ascending), so the
result does not depend on the number of tasks or the order they finish in. The
member margins go to Ray's object store once per k (``ray.put``) and reach the tasks
as arguments, never through closures.

Example:
    >>> from serray.ensemble import run_ensemble_search  # doctest: +SKIP
    >>> res = run_ensemble_search(members, [5, 9], fusion="logits")  # doctest: +SKIP
    >>> res.best_per_k[["k", "val_ua", "test_ua"]]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from serray import io
from serray.ensemble.combinatorics import n_choose_k, split_range
from serray.ensemble.greedy import greedy_selection
from serray.ensemble.search import (
    Members,
    _check_choice,
    _check_search_args,
    build_leaderboard,
    build_margins,
    exhaustive_search,
    merge_top,
    prune_margins,
    search_range,
    selection_note,
    selection_split,
)
from serray.training.resources import Resources

__all__ = ["METHODS", "EnsembleResult", "distributed_search", "run_ensemble_search"]

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("exhaustive", "greedy")

#: Default smallest number of subsets per Ray task (keeps scheduling overhead small).
MIN_TASK_SUBSETS = 20_000


def _range_task(
    margins: Any, k: int, start: int, stop: int, top: int, backend: str, batch: int | None, device: str | None
) -> tuple[int, int, np.ndarray, np.ndarray, int, float]:
    """Ray task body: best ``top`` subsets of one rank range (margins already pruned for k).

    Returns ``(k, start, scores, ranks, n_evaluated, cpu_seconds)``.
    """
    t0 = time.process_time()
    scores, ranks, n = search_range(margins, k, start, stop, top, backend, batch, device, pruned=True)
    return k, start, scores, ranks, n, time.process_time() - t0


@functools.lru_cache(maxsize=None)
def _remote_range_task():  # pragma: no cover - trivial wrapper
    import ray

    return ray.remote(_range_task)


def _plan_tasks(total: int, cpus: int, num_tasks: int | None, min_task_subsets: int) -> int:
    if num_tasks is not None:
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        return max(1, min(num_tasks, total))
    # enough tasks to balance the load (4 per CPU), none smaller than min_task_subsets
    return max(1, min(4 * cpus, math.ceil(total / max(1, min_task_subsets))))


def _clip_range(rank_range: tuple[int, int] | None, total: int) -> tuple[int, int]:
    if rank_range is None:
        return 0, total
    lo, hi = int(rank_range[0]), int(rank_range[1])
    if lo < 0 or hi < lo:
        raise ValueError(f"rank_range must be (start, stop) with 0 <= start <= stop, got {rank_range}")
    return min(lo, total), min(hi, total)


def distributed_search(
    members: Members,
    k_values: Iterable[int],
    fusion: str = "logits",
    selection: str = "validation",
    top: int = 10,
    backend: str = "numpy",
    num_tasks: int | None = None,
    resources: Resources | None = None,
    batch: int | None = None,
    dtype: str = "float64",
    device: str | None = None,
    num_gpus_per_task: float = 0.0,
    min_task_subsets: int = MIN_TASK_SUBSETS,
    progress: bool = True,
    rank_range: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Exhaustive search of every k-subset, partitioned across Ray tasks.

    Same result, ordering and tie-breaking as :func:`serray.ensemble.exhaustive_search`
    (higher score first, then the lexicographically smaller member-index tuple).

    Args:
        members: Ensemble members.
        k_values: Subset sizes.
        fusion: ``"logits"``, ``"prob"`` or ``"vote"``.
        selection: ``"validation"`` or ``"test-optimistic"``.
        top: Subsets kept per k.
        backend: Evaluator inside each task (``"numpy"``, ``"torch"``, ``"auto"``).
        num_tasks: Tasks per k; default ``min(4 x CPUs, C(M, k) / min_task_subsets)``.
        resources: Where the tasks run (:class:`~serray.training.resources.Resources`):
            its ``address`` is the Ray cluster to join (``"auto"``, ``"HOST:PORT"``;
            None starts or reuses a local Ray, :meth:`~serray.training.resources.Resources.start_ray`);
            its ``num_cpus`` the cores to use: at most this many tasks run at once, and
            a local Ray not running yet starts with this many CPUs. Default: all CPUs of
            the cluster.
        batch: Subsets per array operation inside a task.
        dtype: ``"float64"`` (exact) or ``"float32"``.
        device: Torch device for ``backend="torch"``.
        num_gpus_per_task: GPUs requested per task (for the torch backend on a cluster).
        min_task_subsets: Smallest range given to one task when ``num_tasks`` is None.
        progress: Show a tqdm bar over finished tasks.
        rank_range: Optional ``(start, stop)`` restricting every k to ranks in
            ``[start, stop)`` (clipped to ``C(M, k)``), e.g. to sample a huge k.

    Returns:
        Leaderboard (see :func:`serray.ensemble.search.build_leaderboard`);
        ``attrs["stats"]`` holds subsets, wall seconds, subsets/s, tasks, cores and the
        CPU seconds the tasks used.
    """
    import ray

    ks = _check_search_args(members, k_values, fusion, selection, top)
    res = resources if resources is not None else Resources()
    res.start_ray()
    num_cpus = res.num_cpus
    cluster_cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    cpus = min(num_cpus, cluster_cpus) if num_cpus else cluster_cpus
    base = build_margins(members, fusion, selection_split(selection), dtype)
    jobs = _plan_jobs(members.n_members, ks, base, rank_range, cpus, num_tasks, min_task_subsets)
    n_subsets = sum(hi - lo for _, _, lo, hi in jobs)
    log.info("ensemble search: %d subsets in %d tasks on %d cores", n_subsets, len(jobs), cpus)
    t0 = time.perf_counter()
    remote = _remote_range_task().options(num_cpus=1, num_gpus=num_gpus_per_task)
    parts, cpu_s = _run_jobs(jobs, ks, cpus, lambda ref, k, lo, hi: remote.remote(ref, k, lo, hi, top, backend, batch, device),
                             progress)
    wall = time.perf_counter() - t0
    per_k = {k: merge_top(parts[k], top) for k in ks}
    board = build_leaderboard(members, per_k, fusion, selection)
    board.attrs["stats"] = stats = _search_stats(n_subsets, wall, len(jobs), cpus, cpu_s)
    log.info("ensemble search done: %d subsets in %.2f s (%.0f/s)", n_subsets, wall, stats["subsets_per_s"])
    return board


def _search_stats(n_subsets: int, wall: float, n_tasks: int, cpus: int, cpu_s: float) -> dict[str, Any]:
    """``attrs["stats"]`` of a distributed search's leaderboard."""
    return {
        "subsets": int(n_subsets),
        "seconds": wall,
        "subsets_per_s": n_subsets / wall if wall > 0 else float("inf"),
        "tasks": n_tasks,
        "cores": cpus,
        "task_cpu_seconds": cpu_s,
    }


def _plan_jobs(
    n_members: int, ks: Iterable[int], base: Any, rank_range: tuple[int, int] | None, cpus: int, num_tasks: int | None,
    min_task_subsets: int,
) -> list[tuple[Any, int, int, int]]:
    """``(margins ref, k, start, stop)`` of every task; each k's pruned margins go to the object store once."""
    import ray

    jobs: list[tuple[Any, int, int, int]] = []
    for k in ks:
        lo, hi = _clip_range(rank_range, n_choose_k(n_members, k))
        ref = ray.put(prune_margins(base, k))  # once per k, shared by its tasks
        n_tasks = _plan_tasks(hi - lo, cpus, num_tasks, min_task_subsets)
        for a, b in split_range(hi - lo, n_tasks):
            jobs.append((ref, k, lo + a, lo + b))
    return jobs


def _run_jobs(
    jobs: list[tuple[Any, int, int, int]], ks: Iterable[int], cpus: int, submit: Callable[..., Any], progress: bool,
) -> tuple[dict[int, list[tuple[np.ndarray, np.ndarray]]], float]:
    """Run the tasks, at most ``cpus`` at once; returns ``({k: [(scores, ranks), ...]}, task CPU seconds)``."""
    import ray
    from tqdm.auto import tqdm

    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in ks}
    pending: list = []
    next_job = 0
    cpu_s = 0.0
    with tqdm(total=len(jobs), desc="ensemble tasks", unit="task", disable=not progress) as bar:
        while next_job < len(jobs) or pending:
            while next_job < len(jobs) and len(pending) < cpus:
                pending.append(submit(*jobs[next_job]))
                next_job += 1
            done, pending = ray.wait(pending, num_returns=1)
            for k, lo, scores, ranks, n, secs in ray.get(done):
                parts[k].append((scores, ranks))
                cpu_s += secs
                bar.update(1)
    return parts, cpu_s


@dataclasses.dataclass
class EnsembleResult:
    """Outcome of :func:`run_ensemble_search`.

    Attributes:
        leaderboard: One row per ensemble (columns ``k, members, score, val_ua, val_wa,
            test_ua, test_wa, selection, ...``), ordered by k then position.
        method: ``"exhaustive"`` or ``"greedy"``.
        fusion: Fusion rule.
        selection: Selection mode.
        note: :data:`~serray.ensemble.search.VALIDATION_NOTE` or
            :data:`~serray.ensemble.search.OPTIMISTIC_WARNING`.
        greedy_path: The greedy path (method ``"greedy"`` only).
        stats: Timing and counts.
    """

    leaderboard: pd.DataFrame
    method: str
    fusion: str
    selection: str
    note: str
    greedy_path: pd.DataFrame | None = None
    stats: dict = dataclasses.field(default_factory=dict)

    @property
    def best_per_k(self) -> pd.DataFrame:
        """The best ensemble of every k (first position per k)."""
        lb = self.leaderboard
        return lb.sort_values(["k", "position"]).groupby("k", sort=True).head(1).reset_index(drop=True)

    @property
    def best(self) -> pd.Series:
        """The single best ensemble: highest score, then smaller k, then lower rank."""
        lb = self.leaderboard
        order = np.lexsort((lb["rank"].to_numpy(), lb["k"].to_numpy(), -lb["score"].to_numpy()))
        return lb.iloc[int(order[0])]

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``leaderboard.parquet``, ``leaderboard.csv`` and ``summary.json`` atomically.

        The selection note is stored in the Parquet metadata (``serray.note``), in the
        CSV's first line (``# ...``) and in the JSON summary.
        """
        out = Path(out_dir)
        meta = {"serray.note": self.note, "serray.selection": self.selection, "serray.fusion": self.fusion,
                "serray.method": self.method}  # fmt: skip
        io.write_parquet(self.leaderboard, out / "leaderboard.parquet", metadata=meta)
        csv = self.leaderboard.copy()
        for col in ("indices", "members"):
            csv[col] = csv[col].map(lambda v: " ".join(map(str, v)))
        io.write_text(f"# {self.note}\n" + csv.to_csv(index=False), out / "leaderboard.csv")
        best = self.best
        io.write_json(
            {
                "method": self.method,
                "fusion": self.fusion,
                "selection": self.selection,
                "note": self.note,
                "stats": self.stats,
                "best": {
                    "k": int(best["k"]),
                    "members": list(best["members"]),
                    "score": float(best["score"]),
                    "val_ua": float(best["val_ua"]),
                    "test_ua": float(best["test_ua"]),
                    "test_wa": float(best["test_wa"]),
                },
            },
            out / "summary.json",
        )
        if self.greedy_path is not None:
            io.write_parquet(self.greedy_path, out / "greedy_path.parquet", metadata=meta)
        return out


def run_ensemble_search(
    members: Members,
    k_values: Iterable[int] | None = None,
    method: str = "exhaustive",
    fusion: str = "logits",
    selection: str = "validation",
    top: int = 10,
    resources: Resources | None = None,
    num_tasks: int | None = None,
    backend: str = "auto",
    max_size: int | None = None,
    progress: bool = True,
) -> EnsembleResult:
    """Search the best late-fusion ensemble of the members; one call for the CLI.

    Args:
        members: Ensemble members (see :func:`serray.ensemble.members_from_predictions`).
        k_values: Subset sizes for ``method="exhaustive"`` (required there).
        method: ``"exhaustive"`` (every k-subset) or ``"greedy"`` (Caruana forward
            selection with replacement, up to ``max_size`` additions).
        fusion: ``"logits"``, ``"prob"`` or ``"vote"``.
        selection: ``"validation"`` or ``"test-optimistic"`` (flagged as optimistic).
        top: Subsets kept per k (exhaustive).
        resources: Where the search runs (:class:`~serray.training.resources.Resources`):
            ``address`` (None: a local Ray), ``num_cpus`` (cores to use; default all)
            and, for the exhaustive search, ``parallel``: on Ray tasks (``True`` or
            ``None``, the default) or in this process (``False``).
        num_tasks: Ray tasks per k (default: automatic).
        backend: Evaluator backend (``"auto"`` picks torch on CUDA, else numpy).
        max_size: Greedy only: number of additions (default: number of members).
        progress: Show progress bars.

    Returns:
        :class:`EnsembleResult`.
    """
    _check_choice("method", method, METHODS)
    note = selection_note(selection)
    t0 = time.perf_counter()
    if method == "greedy":
        return _greedy_result(members, max_size, fusion, selection, note)
    if k_values is None:
        raise ValueError("k_values is required for method='exhaustive' (e.g. [1, 2, 3, 5, 9])")
    res = resources if resources is not None else Resources()
    if res.parallel is not False:
        board = distributed_search(
            members, k_values, fusion=fusion, selection=selection, top=top, backend=backend,
            num_tasks=num_tasks, resources=res, progress=progress,
        )  # fmt: skip
        stats = dict(board.attrs.get("stats", {}))
    else:
        board = exhaustive_search(members, k_values, fusion=fusion, selection=selection, top=top, backend=backend)
        n = sum(n_choose_k(members.n_members, k) for k in set(int(k) for k in k_values))
        wall = time.perf_counter() - t0
        stats = {"subsets": n, "seconds": wall, "subsets_per_s": n / wall if wall > 0 else float("inf")}
    return EnsembleResult(board, method, fusion, selection, note, stats=stats)


def _greedy_result(members: Members, max_size: int | None, fusion: str, selection: str, note: str) -> EnsembleResult:
    """:func:`run_ensemble_search` with ``method="greedy"``: the greedy path as a one-row-per-step leaderboard."""
    t0 = time.perf_counter()
    path = greedy_selection(members, max_size=max_size, fusion=fusion, selection=selection)
    board = path.assign(position=1, rank=-1)[
        ["k", "position", "rank", "indices", "members", "composition", "score",
         "val_ua", "val_wa", "test_ua", "test_wa", "fusion", "selection"]
    ]  # fmt: skip
    board.attrs["note"] = note
    stats = {"steps": len(path), "best_step": path.attrs["best_step"], "seconds": time.perf_counter() - t0}
    return EnsembleResult(board, "greedy", fusion, selection, note, greedy_path=path, stats=stats)
