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

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from serray.features.base import Extractor, file_identity, get_extractor
from serray.features.cache import LOAD_PARAMS, FeatureCache
from serray.features.workers import LOCAL_POOL_MAX_FILES, ExtractionWorker, PoolHolder, Result

__all__ = ["ExtractionReport", "ExtractionWorker", "extract_features", "LOCAL_POOL_MAX_FILES", "default_chunk_size"]

log = logging.getLogger(__name__)


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


@dataclass
class _Plan:
    """What one set's extraction starts from.

    Attributes:
        utt_ids, paths: The manifest's utterances and their absolute paths (manifest order).
        key_of: File identity of every path (``None``: the file is missing).
        cached_before: Identities already cached (after repair).
        old_fail: The failure record found in the cache folder.
        known_reason: Identities recorded as failing for good (empty with ``retry_failed``).
        todo: ``(file_key, path)`` to extract, each file once.
    """

    utt_ids: list[str]
    paths: list[str]
    key_of: dict[str, str | None]
    cached_before: set[str]
    old_fail: pd.DataFrame
    known_reason: dict[str, str]
    todo: list[tuple[str, str]]


def _plan(cache: FeatureCache, manifest: pd.DataFrame, retry_failed: bool) -> _Plan:
    """Identify the manifest's files and decide which to extract (repairs the cache first)."""
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
    if cache.extractor.sort_by_length and todo:
        todo.sort(key=lambda kp: -os.path.getsize(kp[1]))
    return _Plan(utt_ids, paths, key_of, cached_before, old_fail, known_reason, todo)


def default_chunk_size(ext: Any, n_items: int, n_actors: int, chunks_per_actor: int = 32) -> int:
    """Files per chunk: about ``chunks_per_actor`` chunks per actor (for load balance and
    progress), at most 64 files and at least the extractor's ``min_chunk``.

    Example:
        >>> from types import SimpleNamespace
        >>> default_chunk_size(SimpleNamespace(min_chunk=1), 1000, 2)
        16
    """
    return max(ext.min_chunk, min(64, math.ceil(n_items / (max(1, n_actors) * chunks_per_actor))))


def _run_chunks(
    cache: FeatureCache, todo: list[tuple[str, str]], pools: PoolHolder, chunk_size: int | None, progress: bool,
) -> tuple[set[str], list[dict[str, Any]], int]:
    """Extract ``todo`` on the pool, writing each chunk as it arrives.

    Returns:
        ``(extracted file keys, failure rows, actors used)``.
    """
    ext, name = cache.extractor, cache.extractor.name
    pool = pools.get(len(todo))
    size = chunk_size or default_chunk_size(ext, len(todo), pool.n_actors)
    chunks = _chunks(todo, size)
    worker_params = {**ext.params, **{k: v for k, v in ext.options.items() if v is not None}}
    log.info("%s: extracting %d file(s) in %d chunk(s) on %s -> %s", name, len(todo), len(chunks), pool.where, cache.dir)
    from tqdm.auto import tqdm

    extracted: set[str] = set()
    new_fail: list[dict[str, Any]] = []
    with tqdm(total=len(todo), desc=name, unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for results in pool.map(name, worker_params, chunks):
            results = _refuse_non_finite(results, name, ext.storage_dtype)
            ok = [(k, p, a) for k, p, a, _t, _r, _pers in results if a is not None]
            cache.write_entries(ok)
            extracted.update(k for k, _, _ in ok)
            new_fail.extend(_failure_rows(results))
            bar.update(len(results))
    cache.consolidate()
    return extracted, new_fail, pool.n_actors


def _write_failure_record(cache: FeatureCache, plan: _Plan, extracted: set[str], new_fail: list[dict[str, Any]]) -> pd.DataFrame:
    """Write the failure record (previous failures still relevant + this run's); return this run's."""
    retried = {k for k, _ in plan.todo}
    keep = plan.old_fail[~plan.old_fail["file_key"].isin(extracted | retried | {""})]
    missing_rows = [
        {"file_key": "", "path": p, "reason": "file not found (check the corpus root / manifest path)",
         "error_type": "AudioError", "persistent": True}
        for p, k in plan.key_of.items() if k is None
    ]
    new_df = pd.DataFrame(new_fail + missing_rows, columns=["file_key", "path", "reason", "error_type", "persistent"])
    new_df["utt_id"] = new_df["path"].map(dict(zip(plan.paths, plan.utt_ids)))
    record = pd.concat([keep, new_df], ignore_index=True) if len(keep) else new_df
    record = record.drop_duplicates(subset=["file_key", "path"], keep="last")
    record["persistent"] = record["persistent"].astype(bool)
    if len(record) or cache.failures_path.exists():
        cache.write_failures(record)
    return new_df


def _count(plan: _Plan, extracted: set[str], new_df: pd.DataFrame) -> tuple[int, int, pd.DataFrame]:
    """``(n cached, n extracted, failures)`` per utterance (``path``, ``utt_id``, ``reason``)."""
    fail_reason = {r.path: r.reason for r in new_df.itertuples()}
    for p in dict.fromkeys(plan.paths):
        k = plan.key_of[p]
        if k is not None and k in plan.known_reason and p not in fail_reason:
            fail_reason[p] = f"{plan.known_reason[k]} (recorded by an earlier run; --retry-failed to try again)"
    n_cached = n_extracted = 0
    fail_rows = []
    for u, p in zip(plan.utt_ids, plan.paths):
        k = plan.key_of[p]
        if k is not None and k in plan.cached_before:
            n_cached += 1
        elif k is not None and k in extracted:
            n_extracted += 1
        else:
            fail_rows.append({"path": p, "utt_id": u, "reason": fail_reason.get(p, "not extracted")})
    return n_cached, n_extracted, pd.DataFrame(fail_rows, columns=["path", "utt_id", "reason"])


def _extract_one(
    workdir: Path,
    name: str,
    params: Mapping[str, Any],
    manifest: pd.DataFrame,
    pools: PoolHolder,
    *,
    progress: bool,
    chunk_size: int | None,
    retry_failed: bool,
) -> ExtractionReport:
    """Extract one feature set for ``manifest`` (what is not cached yet) and report it."""
    t0 = time.perf_counter()
    ext: Extractor = get_extractor(name, **params)
    cache = FeatureCache(workdir, ext)
    cache.remove_stale_tmp()
    plan = _plan(cache, manifest, retry_failed)
    extracted: set[str] = set()
    new_fail: list[dict[str, Any]] = []
    n_actors_used = 0
    if plan.todo:
        extracted, new_fail, n_actors_used = _run_chunks(cache, plan.todo, pools, chunk_size, progress)
    new_df = _write_failure_record(cache, plan, extracted, new_fail)
    n_cached, n_extracted, failures = _count(plan, extracted, new_df)
    report = ExtractionReport(
        name=name, key=ext.key(), cache_dir=cache.dir, n_total=len(plan.utt_ids), n_cached=n_cached,
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


def _check_extract_args(
    sets: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None, address: str | None, num_actors: int | None,
    gpus_per_actor: float, chunk_size: int | None, use_ray: bool | None,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``(sets without repeats, per-set extraction parameters)``, every set's parameters checked.

    Raises:
        ValueError: Unknown set or parameter, empty ``sets`` or bad counts (one line each).
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
    given = {k: dict(v) for k, v in (params or {}).items()}
    unknown = sorted(set(given) - set(sets))
    if unknown:
        raise ValueError(f"parameters given for set(s) {unknown} that are not being extracted ({sets})")
    per_set = {s: {k: v for k, v in given.get(s, {}).items() if k not in LOAD_PARAMS} for s in sets}
    for s in sets:  # every set's parameters, before spending time on any of them
        get_extractor(s, **per_set[s])
    return sets, per_set


def _manifest_of(workdir: str | os.PathLike, manifest: pd.DataFrame | None) -> pd.DataFrame:
    """``manifest``, or every manifest of ``workdir``; refused without utterances or ``utt_id``/``path``."""
    if manifest is None:
        from serray.manifest import load_manifests

        manifest = load_manifests(workdir)
    missing_cols = [c for c in ("utt_id", "path") if c not in manifest.columns]
    if missing_cols:
        raise ValueError(f"manifest lacks column(s) {missing_cols}")
    if manifest.empty:
        raise ValueError("manifest has no utterances")
    return manifest


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
    augment: Any = None,
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
        augment: A :class:`serray.features.augment.WaveAugment`: also extract its
            augmented copies of every utterance (:mod:`serray.features.copies`), reported
            as ``<set>@<tag>``.

    Returns:
        ``{set name: ExtractionReport}`` (and ``{"<set>@<tag>": ...}`` for copies).

    Raises:
        ValueError: Unknown set or parameter, empty ``sets``, bad counts, or a manifest
            without ``utt_id``/``path``.
    """
    sets, per_set = _check_extract_args(sets, params, address, num_actors, gpus_per_actor, chunk_size, use_ray)
    manifest = _manifest_of(workdir, manifest)
    reports = {}
    pools = PoolHolder(address, num_actors, gpus_per_actor, use_ray)
    try:
        for s in sets:
            reports[s] = _extract_one(
                Path(workdir), s, per_set[s], manifest, pools, progress=progress, chunk_size=chunk_size,
                retry_failed=retry_failed,
            )
            if augment is not None:
                from serray.features.copies import extract_copies

                reports[f"{s}@{augment.tag}"] = extract_copies(
                    workdir, s, per_set[s], manifest, augment, pools, progress=progress, chunk_size=chunk_size,
                    retry_failed=retry_failed,
                )
    finally:
        pools.close()
    return reports
