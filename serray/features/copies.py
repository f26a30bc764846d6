"""Augmented copies in the feature cache: extracting them, and loading them for training.

Copies of a feature set live in that set's cache folder (``W/features/<set>-<key>/``), each
under its own key :func:`serray.features.augment.copy_key` of (the source file's identity,
the augmentation tag, the copy number), so that copies of two specs (or seeds) never mix,
a changed source file gets new copies, and a second run extracts nothing. They share the
cache's checksums, repair and failure record with the set's utterances. The spec of a tag
is in ``W/features/augment/<tag>.json``.

Example (a work directory where nothing is extracted yet)::

    >>> import tempfile, pandas as pd
    >>> manifest = pd.DataFrame({"utt_id": ["u1"], "path": ["/nonexistent.wav"]})
    >>> load_copies(tempfile.mkdtemp(), "mfcc", manifest, "aug-00000000")
    Traceback (most recent call last):
    ...
    serray.features.cache.FeaturesNotExtractedError: augmentation 'aug-00000000' was never extracted in ...; ...
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from serray.features.augment import WaveAugment, copy_id, copy_key, read_spec, write_spec
from serray.features.base import get_extractor
from serray.features.cache import FeatureCache, FeatureSet, FeaturesNotExtractedError, features_command_hint
from serray.features.loading import _extractor_for, _file_keys, _read_arrays, _read_vectors
from serray.features.runner import ExtractionReport, _run_chunks
from serray.features.workers import PoolHolder

__all__ = ["copy_table", "extract_copies", "load_copies"]

log = logging.getLogger(__name__)


def copy_table(manifest: pd.DataFrame, tag: str, copies: int) -> pd.DataFrame:
    """One row per copy of every manifest utterance: ``utt_id`` (the copy's), ``source``,
    ``copy``, ``path`` (absolute), ``file_key`` (the copy's cache key; ``None`` when the
    source file is missing), in manifest order, copies of an utterance together."""
    utt = manifest["utt_id"].astype(str).tolist()
    paths = [os.path.abspath(p) for p in manifest["path"].astype(str)]
    keys = _file_keys(paths)
    rows = [
        {"utt_id": copy_id(u, tag, i), "source": u, "copy": i, "path": p, "file_key": None if k is None else copy_key(k, tag, i)}
        for u, p, k in zip(utt, paths, keys) for i in range(int(copies))
    ]
    return pd.DataFrame(rows, columns=["utt_id", "source", "copy", "path", "file_key"])


def _todo(cache: FeatureCache, table: pd.DataFrame, aug: WaveAugment, retry_failed: bool) -> tuple[list[tuple], set[str], dict[str, str]]:
    """``(items to extract, keys cached before, persistent failures key -> reason)``."""
    cached = cache.cached_keys()
    fail = cache.read_failures()
    known = {} if retry_failed else dict(zip(fail.loc[fail["persistent"].astype(bool), "file_key"],
                                             fail.loc[fail["persistent"].astype(bool), "reason"]))
    todo, seen = [], set()
    for r in table.itertuples():
        k = r.file_key
        if k is None or k in cached or k in known or k in seen:
            continue
        seen.add(k)
        todo.append((k, r.path, aug.draw(Path(r.path).name, int(r.copy))))
    return todo, cached, known


def _record_failures(cache: FeatureCache, table: pd.DataFrame, todo: list[tuple], extracted: set[str],
                     new_fail: list[dict[str, Any]]) -> None:
    """Add this run's failed copies to the set's failure record (dropping retried ones)."""
    old = cache.read_failures()
    retried = {t[0] for t in todo}
    keep = old[~old["file_key"].isin(extracted | retried)]
    new_df = pd.DataFrame(new_fail, columns=["file_key", "path", "reason", "error_type", "persistent"])
    new_df["utt_id"] = new_df["file_key"].map(dict(zip(table["file_key"], table["utt_id"])))
    record = pd.concat([keep, new_df], ignore_index=True) if len(keep) else new_df
    if len(record) or cache.failures_path.exists():
        record["persistent"] = record["persistent"].astype(bool)
        cache.write_failures(record)


def extract_copies(
    workdir: str | os.PathLike, name: str, params: Mapping[str, Any], manifest: pd.DataFrame, aug: WaveAugment,
    pools: PoolHolder, *, progress: bool = False, chunk_size: int | None = None, retry_failed: bool = False,
) -> ExtractionReport:
    """Extract the copies of ``aug`` of every manifest utterance for set ``name`` (what is not cached).

    Writes the spec to ``W/features/augment/<tag>.json`` first. The report is named
    ``<set>@<tag>`` and counts copies.
    """
    t0 = time.perf_counter()
    cache = FeatureCache(workdir, get_extractor(name, **params))
    write_spec(workdir, aug)
    table = copy_table(manifest, aug.tag, aug.copies)
    todo, cached, known = _todo(cache, table, aug, retry_failed)
    extracted: set[str] = set()
    new_fail: list[dict[str, Any]] = []
    n_actors = 0
    if todo:
        extracted, new_fail, n_actors = _run_chunks(cache, todo, pools, chunk_size, progress)
    _record_failures(cache, table, todo, extracted, new_fail)
    reasons = {**known, **{f["file_key"]: f["reason"] for f in new_fail}}
    failed = table[~table["file_key"].isin(cached | extracted)]
    failures = pd.DataFrame({"path": failed["path"], "utt_id": failed["utt_id"],
                             "reason": [reasons.get(k, "source file not found") for k in failed["file_key"]]})
    report = ExtractionReport(
        name=f"{name}@{aug.tag}", key=cache.extractor.key(), cache_dir=cache.dir, n_total=len(table),
        n_cached=int(table["file_key"].isin(cached).sum()), n_extracted=int(table["file_key"].isin(extracted).sum()),
        n_failed=len(failures), failures=failures.reset_index(drop=True), seconds=time.perf_counter() - t0,
        failures_path=cache.failures_path if len(failures) else None, n_actors=n_actors,
    )
    log.info("%s (copies: %s)", report, aug.cli())
    return report


def _spec_of(workdir: str | os.PathLike, set_name: str, tag: str) -> dict[str, Any]:
    """The stored spec of ``tag``; refused with the fix when it was never extracted."""
    stored = read_spec(workdir, tag)
    if stored is None:
        raise FeaturesNotExtractedError(
            f"augmentation {tag!r} was never extracted in {workdir}; extract copies with "
            f"`serray features {workdir} --set {set_name} --augment ...`, which prints the tag to give to wave_augment"
        )
    return stored


def load_copies(
    workdir: str | os.PathLike, set_name: str, manifest: pd.DataFrame, tag: str, params: Mapping[str, Any] | None = None,
    *, dtype: Any = np.float32,
) -> tuple[FeatureSet, pd.DataFrame]:
    """The cached copies of augmentation ``tag`` of ``manifest``'s utterances for one set.

    Returns:
        ``(features of the copies that have them, copy table)``: the feature set's
        ``utt_ids`` are copy ids (``<utt>@<tag>.<i>``), its ``missing`` the copies without
        features; the table (:func:`copy_table`) maps every copy to its ``source``.

    Raises:
        FeaturesNotExtractedError: ``tag`` never extracted in ``workdir`` (the message
            gives the command).
        ValueError: As :func:`serray.features.load_features`.
    """
    stored = _spec_of(workdir, set_name, tag)
    ext, extract_params, sel = _extractor_for(workdir, set_name, manifest, params, None)
    cache = FeatureCache(workdir, ext)
    table = copy_table(manifest, tag, int(stored["spec"]["copies"]))
    meta = cache.read_meta()
    ids, keys = table["utt_id"].tolist(), table["file_key"].tolist()
    if meta is None:
        out_ids, missing, data, shape = [], ids, [], ()
    else:
        dims = tuple(int(d) for d in meta["dims"])
        if ext.kind == "vector":
            out_ids, missing, data, shape = _read_vectors(cache, ids, keys, dims, sel, meta.get("layers"))
        else:
            out_ids, missing, data, shape = _read_arrays(cache, ids, keys, dims, sel, meta.get("layers"), dtype, False)
    if missing:
        hint = features_command_hint(workdir, set_name, extract_params)
        log.warning("%s: %d of %d copies of %s have no features, e.g. %s (extract them: `%s %s`)",
                    set_name, len(missing), len(ids), tag, missing[:2], hint, stored["cli"])
    fs = FeatureSet(name=set_name, kind=ext.kind, utt_ids=list(out_ids), data=data, missing=list(missing), shape=tuple(shape),
                    params=dict(ext.params), key=ext.key(), meta=meta or {}, not_extracted=list(missing))
    return fs, table
