"""Extract feature sets for a manifest on a Ray actor pool, skipping what is cached.

For each feature set: the manifest's files are identified (path, size, mtime), files
already in the cache or known to fail are skipped, and the rest are cut into chunks
(about 32 per actor, so the last chunks leave little idle time) and sent to a pool of
actors, one CPU each (plus ``gpus_per_actor``), two chunks in flight per actor. The pool
starts once per call and serves every set; each actor builds an extractor once (one
openSMILE instance, one model copy) and keeps it. Actors return arrays; the driver
writes each chunk to the cache atomically as it arrives, so an interrupted run keeps
every finished chunk and the next run extracts only the rest. A run that finds
everything cached starts no Ray at all. A file that fails (unreadable audio, extractor error,
dead worker) is recorded with its path and reason and the rest of the corpus is still
extracted. Failures of the file itself (unreadable audio, non-finite features) are
remembered and not retried until the file changes (``retry_failed=True`` retries them);
other failures (a worker crash, out of memory) are retried by the next run.

``num_actors=0`` runs the same code in the calling process without Ray (debugging,
small jobs, tests). Small local work (no ``address``, CPU only, at most
:data:`LOCAL_POOL_MAX_FILES` files to extract, Ray not already running) runs on a local
process pool of the same size and the same chunking instead of Ray actors: starting a
local Ray costs about 3 s, a quarter of extracting EmoDB's eGeMAPS on 2 cores. The
workers hold the same :class:`ExtractionWorker` with one torch thread each, as an actor
has, so the features are the same (tested); a worker that dies fails its chunks with a
reason and the next run retries them. ``use_ray=True`` forces actors, ``False`` the pool.

Example:
    >>> reports = extract_features("W", ["egemaps", "mfb"])          # doctest: +SKIP
    >>> reports["egemaps"].n_extracted, reports["egemaps"].n_failed    # doctest: +SKIP
    (535, 0)
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from serray.audio import AudioError, load_audio
from serray.features.base import Extractor, FeatureError, extractor_class, file_identity, get_extractor
from serray.features.cache import LOAD_PARAMS, FeatureCache

__all__ = ["ExtractionReport", "ExtractionWorker", "extract_features"]

log = logging.getLogger(__name__)

#: One worker result per file: (file_key, path, array or None, error type, reason, persistent).
Result = tuple[str, str, "np.ndarray | None", "str | None", "str | None", bool]


@dataclass
class ExtractionReport:
    """What one :func:`extract_features` run did for one feature set (counts are utterances).

    Attributes:
        name: Feature set.
        key: Cache key (names the folder ``W/features/<name>-<key>``).
        cache_dir: The cache folder.
        n_total: Utterances in the manifest.
        n_cached: Utterances whose features were already cached.
        n_extracted: Utterances extracted by this run.
        n_failed: Utterances without features (failed now or earlier, or missing files).
        failures: ``path``, ``utt_id``, ``reason`` of the failed utterances.
        seconds: Wall time for this set.
        failures_path: The failure record in the cache folder (``None`` when no failures).
        n_actors: Actors used (0: in-process or nothing to do).
    """

    name: str
    key: str
    cache_dir: Path
    n_total: int
    n_cached: int
    n_extracted: int
    n_failed: int
    failures: pd.DataFrame = field(repr=False)
    seconds: float
    failures_path: Path | None = None
    n_actors: int = 0

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.n_total} utterances, {self.n_cached} cached, {self.n_extracted} extracted, "
            f"{self.n_failed} failed ({self.seconds:.1f} s) -> {self.cache_dir}"
        )


class ExtractionWorker:
    """Extracts chunks of files; builds each extractor once (a Ray actor, or local).

    One worker serves every feature set of an :func:`extract_features` call, so actors
    start once; each extractor (one openSMILE instance, one model copy) is built on its
    first chunk and kept.

    Args:
        device: Device to compute on; ``None`` picks CUDA when this process sees a GPU.
    """

    def __init__(self, device: str | None = None):
        self._device = device
        self._extractors: dict[str, Extractor] = {}
        self._errors: dict[str, Exception] = {}

    def ready(self) -> dict[str, Any]:
        """Where the worker runs."""
        import socket

        return {"host": socket.gethostname(), "pid": os.getpid()}

    def _get(self, name: str, params: Mapping[str, Any]) -> Extractor:
        ident = f"{name}:{sorted(params.items())!r}"
        if ident in self._errors:
            raise self._errors[ident]
        if ident not in self._extractors:
            try:
                ext = get_extractor(name, **params)
                ext.setup(self._device)
            except Exception as exc:
                self._errors[ident] = exc
                raise
            self._extractors[ident] = ext
        return self._extractors[ident]

    def run(self, name: str, params: Mapping[str, Any], items: Sequence[tuple[str, str]]) -> list[Result]:
        """Load and extract ``(file_key, path)`` items with extractor ``name``; one result per item."""
        try:
            ext = self._get(name, params)
        except Exception as exc:
            reason = f"extractor failed to start: {type(exc).__name__}: {exc}"
            return [(k, p, None, "SetupError", reason, False) for k, p in items]
        results: list[Result | None] = [None] * len(items)
        audios, where = [], []
        for i, (key, path) in enumerate(items):
            try:
                audios.append(load_audio(path, sample_rate=ext.sample_rate))
                where.append(i)
            except AudioError as exc:
                results[i] = (key, path, None, "AudioError", exc.reason, True)
            except Exception as exc:  # anything else reading the file is reported, not fatal
                results[i] = (key, path, None, type(exc).__name__, str(exc), False)
        outs = ext.extract_batch(audios) if audios else []
        for i, out in zip(where, outs):
            key, path = items[i]
            if isinstance(out, Exception):
                persistent = isinstance(out, (AudioError, FeatureError))
                results[i] = (key, path, None, type(out).__name__, str(out) or repr(out), persistent)
            else:
                results[i] = (key, path, out, None, None, False)
        return results  # type: ignore[return-value]


#: Local jobs with at most this many files to extract use a process pool, not Ray
#: (EmoDB, EMOVO, RAVDESS, TESS fit; IEMOCAP and CREMA-D start Ray).
LOCAL_POOL_MAX_FILES = 5000

_POOL_WORKER: "ExtractionWorker | None" = None


def _pool_init() -> None:
    """Process-pool initializer: one torch thread (as a one-CPU Ray actor) and a worker."""
    global _POOL_WORKER
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _POOL_WORKER = ExtractionWorker("cpu")


def _pool_run(name: str, params: Mapping[str, Any], chunk: list[tuple[str, str]]) -> list[Result]:
    assert _POOL_WORKER is not None
    return _POOL_WORKER.run(name, params, chunk)


class _ProcessPool:
    """Chunks on a local process pool (``forkserver``: clean children, no inherited threads)."""

    def __init__(self, n_workers: int) -> None:
        import concurrent.futures
        import multiprocessing

        self.n_actors = n_workers
        self.where = f"{n_workers} local process(es) (small local job: no Ray; --ray uses Ray actors)"
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=n_workers, mp_context=multiprocessing.get_context("forkserver"), initializer=_pool_init,
        )

    def map(self, name: str, params: Mapping[str, Any], chunks: list[list[tuple[str, str]]]) -> Iterator[list[Result]]:
        import concurrent.futures

        futures = {self._executor.submit(_pool_run, name, params, chunk): chunk for chunk in chunks}
        for fut in concurrent.futures.as_completed(futures):
            chunk = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # a dead worker breaks the pool: its chunks fail, retried next run
                reason = f"worker failed: {type(exc).__name__}: {exc}"
                log.warning("%s: chunk of %d file(s) failed: %s", name, len(chunk), reason)
                yield [(k, p, None, "WorkerError", reason, False) for k, p in chunk]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def _refuse_non_finite(results: Sequence[Result], name: str, storage_dtype: str) -> list[Result]:
    """``results`` with every array that is not finite as stored (after the cast to
    ``storage_dtype``, e.g. float16 overflows to inf) turned into a persistent failure
    naming the file, so that no NaN or inf reaches the cache (a warning names each)."""
    out: list[Result] = []
    for k, p, a, t, r, pers in results:
        if a is not None and not np.isfinite(np.asarray(a, dtype=storage_dtype)).all():
            cast = "" if np.asarray(a).dtype == np.dtype(storage_dtype) else f" as stored ({storage_dtype})"
            reason = f"{name}: NaN or infinite feature values{cast} for {p}; refused, not cached"
            log.warning("%s", reason)
            out.append((k, p, None, "FeatureError", reason, True))
        else:
            out.append((k, p, a, t, r, pers))
    return out


def _failure_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    return [
        {"file_key": k, "path": p, "reason": r, "error_type": t, "persistent": bool(pers)}
        for k, p, a, t, r, pers in results if a is None
    ]


class _LocalPool:
    """Runs chunks in this process."""

    n_actors = 0
    where = "this process"

    def __init__(self) -> None:
        self._worker = ExtractionWorker()

    def map(self, name: str, params: Mapping[str, Any], chunks: list[list[tuple[str, str]]]) -> Iterator[list[Result]]:
        cls = extractor_class(name)
        with _torch_threads(1 if cls.single_thread and "torch" in cls.libraries else None):
            for chunk in chunks:
                yield self._worker.run(name, params, chunk)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Limit torch to ``n`` intra-op threads inside the block (``None``: unchanged)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _RayPool:
    """A pool of :class:`ExtractionWorker` actors, two chunks in flight per started actor.

    Work goes only to actors that have started, so actors waiting for resources (more
    actors than free CPUs, or an autoscaling cluster still adding nodes) never hold chunks.
    """

    def __init__(self, n_actors: int, gpus_per_actor: float):
        import ray

        remote_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=1)(ExtractionWorker)
        self.actors = [remote_cls.remote() for _ in range(n_actors)]
        self._starting = {a.ready.remote(): a for a in self.actors}
        self._started: list[Any] = []
        self.n_actors = n_actors
        self.where = f"{n_actors} Ray actor(s)" + (f" with {gpus_per_actor:g} GPU each" if gpus_per_actor else "")

    def map(self, name: str, params: Mapping[str, Any], chunks: list[list[tuple[str, str]]]) -> Iterator[list[Result]]:
        import ray

        queue = collections.deque(chunks)
        pending: dict[Any, tuple[Any, list[tuple[str, str]]]] = {}

        def submit(actor: Any) -> None:
            if queue:
                chunk = queue.popleft()
                pending[actor.run.remote(name, params, chunk)] = (actor, chunk)

        for actor in self._started:  # two chunks in flight per actor: no idle gap between chunks
            submit(actor)
            submit(actor)
        while pending or (queue and self._starting):
            done, _ = ray.wait([*pending, *self._starting], num_returns=1, timeout=120)
            if not done:
                log.warning("%s: waiting for cluster resources to start %d actor(s)", name, len(self._starting))
                continue
            ref = done[0]
            if ref in self._starting:
                actor = self._starting.pop(ref)
                try:
                    log.debug("worker started: %s", ray.get(ref))
                except Exception as exc:  # the actor could not start; the others go on
                    log.warning("%s: a worker failed to start: %s", name, _cause(exc))
                    continue
                self._started.append(actor)
                submit(actor)
                submit(actor)
                continue
            actor, chunk = pending.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as exc:  # the worker crashed on this chunk; the rest goes on
                reason = f"worker failed: {_cause(exc)}"
                log.warning("%s: chunk of %d file(s) failed: %s", name, len(chunk), reason)
                yield [(k, p, None, "WorkerError", reason, False) for k, p in chunk]
            submit(actor)
        for chunk in queue:  # only when no actor could start
            yield [(k, p, None, "WorkerError", "no worker could start", False) for k, p in chunk]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def _cause(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def _default_actors(gpus_per_actor: float) -> int:
    """One actor per free CPU, or per ``gpus_per_actor`` of the free GPUs (all when none is free)."""
    import ray

    free, total = ray.available_resources(), ray.cluster_resources()
    if gpus_per_actor > 0:
        gpus = free.get("GPU", 0.0) or total.get("GPU", 0.0)
        return max(1, int(gpus // gpus_per_actor))
    return max(1, int(free.get("CPU", 0.0) or total.get("CPU", 1.0)))


class _PoolHolder:
    """Creates the worker pool on first use (a run that finds everything cached starts no Ray)."""

    def __init__(self, address: str | None, num_actors: int | None, gpus_per_actor: float, use_ray: bool | None = None):
        self.address, self.num_actors, self.gpus_per_actor = address, num_actors, gpus_per_actor
        self.use_ray = use_ray
        self.pool: _LocalPool | _ProcessPool | _RayPool | None = None

    def _process_pool(self, n_files: int) -> bool:
        """A local process pool: never with a cluster address or GPUs; else as forced, or for small work."""
        if self.num_actors == 0 or self.address is not None or self.gpus_per_actor > 0:
            return False
        if self.use_ray is not None:
            return not self.use_ray
        import ray

        return n_files <= LOCAL_POOL_MAX_FILES and not ray.is_initialized()

    def get(self, n_files: int = LOCAL_POOL_MAX_FILES + 1) -> "_LocalPool | _ProcessPool | _RayPool":
        if self.pool is None:
            if self.num_actors == 0:
                self.pool = _LocalPool()
            elif self._process_pool(n_files):
                self.pool = _ProcessPool(self.num_actors or max(1, len(os.sched_getaffinity(0))))
            else:
                from serray.raycluster import init_ray

                init_ray(self.address)
                import ray

                total_gpus = ray.cluster_resources().get("GPU", 0.0)
                if self.gpus_per_actor > total_gpus:
                    raise ValueError(
                        f"gpus_per_actor={self.gpus_per_actor:g} but the Ray cluster has {total_gpus:g} GPU(s); "
                        "use 0 to extract on CPUs"
                    )
                n = self.num_actors or _default_actors(self.gpus_per_actor)
                self.pool = _RayPool(n, self.gpus_per_actor)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def _repaired_keys(cache: FeatureCache, wanted: Iterable[str | None]) -> set[str]:
    """The cached keys after :meth:`FeatureCache.repair` deleted unreadable entries.

    When ``meta.json`` was deleted (unreadable), one cached entry of ``wanted`` is left
    out so that it is extracted again and ``meta.json`` is rewritten with it.
    """
    removed = cache.repair()
    keys = cache.cached_keys()
    again = sorted(keys.intersection(k for k in wanted if k is not None))
    if cache.meta_path in removed and again:
        keys.discard(again[0])
    return keys


def _extract_one(
    workdir: Path,
    name: str,
    params: Mapping[str, Any],
    manifest: pd.DataFrame,
    pools: _PoolHolder,
    *,
    progress: bool,
    chunk_size: int | None,
    retry_failed: bool,
) -> ExtractionReport:
    t0 = time.perf_counter()
    ext: Extractor = get_extractor(name, **params)
    cache = FeatureCache(workdir, ext)
    cache.remove_stale_tmp()

    utt_ids = manifest["utt_id"].astype(str).tolist()
    paths = [os.path.abspath(p) for p in manifest["path"].astype(str)]
    key_of: dict[str, str | None] = {}
    for p in dict.fromkeys(paths):
        try:
            key_of[p] = file_identity(p)
        except OSError as exc:
            key_of[p] = None
            log.debug("%s: %s", p, exc)
    cached_before = _repaired_keys(cache, key_of.values())
    old_fail = cache.read_failures()
    known = old_fail[old_fail["persistent"].astype(bool) & (old_fail["file_key"] != "")] if not retry_failed else old_fail.iloc[:0]
    known_reason = dict(zip(known["file_key"], known["reason"]))

    todo: list[tuple[str, str]] = []
    seen: set[str] = set()
    for p in dict.fromkeys(paths):
        k = key_of[p]
        if k is None or k in cached_before or k in known_reason or k in seen:
            continue
        seen.add(k)
        todo.append((k, p))
    if ext.sort_by_length and todo:
        todo.sort(key=lambda kp: -os.path.getsize(kp[1]))

    extracted: set[str] = set()
    new_fail: list[dict[str, Any]] = []
    n_actors_used = 0
    if todo:
        pool = pools.get(len(todo))
        n_actors_used = pool.n_actors
        size = chunk_size or max(ext.min_chunk, min(64, math.ceil(len(todo) / (max(1, pool.n_actors) * 32))))
        chunks = _chunks(todo, size)
        worker_params = {**ext.params, **{k: v for k, v in ext.options.items() if v is not None}}
        log.info("%s: extracting %d file(s) in %d chunk(s) on %s -> %s", name, len(todo), len(chunks), pool.where, cache.dir)
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc=name, unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            for results in pool.map(name, worker_params, chunks):
                results = _refuse_non_finite(results, name, ext.storage_dtype)
                ok = [(k, p, a) for k, p, a, _t, _r, _pers in results if a is not None]
                cache.write_entries(ok)
                extracted.update(k for k, _, _ in ok)
                new_fail.extend(_failure_rows(results))
                bar.update(len(results))
        cache.consolidate()

    # Failure record: previous ones still relevant + this run's; then the per-utterance report.
    retried = {k for k, _ in todo}
    keep = old_fail[
        ~old_fail["file_key"].isin(extracted | retried | {""})
    ]
    missing_rows = [
        {"file_key": "", "path": p, "reason": "file not found (check the corpus root / manifest path)",
         "error_type": "AudioError", "persistent": True}
        for p, k in key_of.items() if k is None
    ]
    new_df = pd.DataFrame(new_fail + missing_rows, columns=["file_key", "path", "reason", "error_type", "persistent"])
    utt_of_path = dict(zip(paths, utt_ids))
    new_df["utt_id"] = new_df["path"].map(utt_of_path)
    record = pd.concat([keep, new_df], ignore_index=True) if len(keep) else new_df
    record = record.drop_duplicates(subset=["file_key", "path"], keep="last")
    record["persistent"] = record["persistent"].astype(bool)
    if len(record) or cache.failures_path.exists():
        cache.write_failures(record)

    fail_reason = {r.path: r.reason for r in new_df.itertuples()}
    for p in dict.fromkeys(paths):
        k = key_of[p]
        if k is not None and k in known_reason and p not in fail_reason:
            fail_reason[p] = f"{known_reason[k]} (recorded by an earlier run; --retry-failed to try again)"
    n_cached = n_extracted = 0
    fail_rows = []
    for u, p in zip(utt_ids, paths):
        k = key_of[p]
        if k is not None and k in cached_before:
            n_cached += 1
        elif k is not None and k in extracted:
            n_extracted += 1
        else:
            fail_rows.append({"path": p, "utt_id": u, "reason": fail_reason.get(p, "not extracted")})
    failures = pd.DataFrame(fail_rows, columns=["path", "utt_id", "reason"])
    report = ExtractionReport(
        name=name, key=ext.key(), cache_dir=cache.dir, n_total=len(utt_ids), n_cached=n_cached,
        n_extracted=n_extracted, n_failed=len(failures), failures=failures, seconds=time.perf_counter() - t0,
        failures_path=cache.failures_path if len(failures) else None, n_actors=n_actors_used,
    )
    if len(failures):
        log.warning(
            "%s: %d utterance(s) failed, e.g. %s: %s (all listed in %s)",
            name, len(failures), failures["path"].iloc[0], failures["reason"].iloc[0], cache.failures_path,
        )
    log.info("%s", report)
    return report


def extract_features(
    workdir: str | os.PathLike,
    sets: Sequence[str],
    manifest: pd.DataFrame | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    address: str | None = None,
    num_actors: int | None = None,
    gpus_per_actor: float = 0.0,
    progress: bool = True,
    chunk_size: int | None = None,
    retry_failed: bool = False,
    use_ray: bool | None = None,
) -> dict[str, ExtractionReport]:
    """Extract every named feature set for every utterance of ``manifest`` into W's cache.

    Args:
        workdir: Work directory; features go to ``W/features/``.
        sets: Feature set names (see :func:`serray.features.extractor_names`).
        manifest: Utterances (``utt_id``, ``path``); default all manifests of ``workdir``.
        params: Per-set parameters, e.g. ``{"ssl": {"model": "/models/hubert"}}``.
        address: Ray cluster to join; ``None`` starts (or reuses) a local Ray.
        num_actors: Actors per set; default one per free CPU (or free GPUs divided by
            ``gpus_per_actor``); ``0`` runs in this process without Ray.
        gpus_per_actor: GPUs each actor reserves (e.g. ``0.5`` puts two model copies on a GPU).
        progress: Show a tqdm progress bar per set.
        chunk_size: Files per work item (default: about 32 chunks per actor, at most 64 files).
        retry_failed: Retry files recorded as failing by an earlier run.
        use_ray: ``True``: Ray actors; ``False``: a local process pool (not with
            ``address`` or GPUs); ``None``: the pool for small local CPU jobs (module
            docstring), Ray otherwise.

    Returns:
        ``{set name: ExtractionReport}``.

    Raises:
        ValueError: Unknown set or parameter, empty ``sets``, bad counts, or a manifest
            without ``utt_id``/``path``.
    """
    sets = list(dict.fromkeys(sets))
    if not sets:
        raise ValueError("no feature sets given; choose from serray.features.extractor_names()")
    if num_actors is not None and num_actors < 0:
        raise ValueError(f"num_actors must be >= 0, got {num_actors}")
    if gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if use_ray is False and (address is not None or gpus_per_actor > 0):
        raise ValueError("use_ray=False (a local process pool) cannot join a cluster (address) or reserve GPUs")
    params = {k: dict(v) for k, v in (params or {}).items()}
    unknown = sorted(set(params) - set(sets))
    if unknown:
        raise ValueError(f"parameters given for set(s) {unknown} that are not being extracted ({sets})")
    # Validate every set's parameters before spending time on any of them.
    for s in sets:
        get_extractor(s, **{k: v for k, v in params.get(s, {}).items() if k not in LOAD_PARAMS})
    if manifest is None:
        from serray.manifest import load_manifests

        manifest = load_manifests(workdir)
    missing_cols = [c for c in ("utt_id", "path") if c not in manifest.columns]
    if missing_cols:
        raise ValueError(f"manifest lacks column(s) {missing_cols}")
    if manifest.empty:
        raise ValueError("manifest has no utterances")
    reports = {}
    pools = _PoolHolder(address, num_actors, gpus_per_actor, use_ray)
    try:
        for s in sets:
            p = {k: v for k, v in params.get(s, {}).items() if k not in LOAD_PARAMS}
            reports[s] = _extract_one(
                Path(workdir), s, p, manifest, pools, progress=progress, chunk_size=chunk_size, retry_failed=retry_failed,
            )
    finally:
        pools.close()
    return reports
