"""The content-addressed feature cache under ``W/features/`` (loading from it:
:mod:`serray.features.loading`).

Layout of one feature set (one extractor with one parameter set)::

    W/features/<name>-<key>/          key = Extractor.key(): name + params + versions
        meta.json                     name, key, params, versions, kind, dims, dtype, ...
        vectors/<hash>.parquet        kind "vector": rows (file_key, path, values)
        arrays/<ab>/<file_key>.npy    kind "sequence"/"segments": one array per file
        failures.parquet              files that failed: file_key, path, utt_id, reason, ...

Entries are keyed by the audio file's identity (:func:`serray.features.base.file_identity`:
absolute path, size and modification time), so two manifests that list the same file
share its features and a changed file is extracted again.

* Vectors: each extraction chunk is written as one Parquet file (``values`` is a
  fixed-size list of float32; per-utterance shapes other than ``[D]``, e.g. SSL ``[L, H]``,
  are flattened and reshaped with ``meta.json``'s ``dims``). At the end of a run the
  chunk files are merged into one file (written first, inputs deleted after), so loading
  a whole set reads one file; duplicates are resolved by ``file_key``.
* Sequences and segments: one ``.npy`` per file, so one utterance loads without reading
  the others (``np.load(..., mmap_mode="r")`` works too).

Every file is written through :func:`serray.io.atomic_path` (temporary file + rename):
an interrupted run leaves complete entries and hidden ``.*.tmp`` files only, which are
never read and are removed by the next run once they are an hour old. The next run
extracts only what is missing.

Every vector Parquet file and ``.npy`` is written with a sidecar ``<file>.sha256`` (the
SHA-256 of its bytes, :func:`serray.io.atomic_path` with ``checksum=True``), checked
before every read: bytes changed after the write (a value overwritten, the file still
parsing) are refused like a truncated file. Files written before checksums existed have
no sidecar; their values are checked for NaN and infinity instead.

A file damaged later (truncated ``.npy`` or Parquet, a ``meta.json`` that is not JSON,
bytes that do not match the checksum) fails every read with an error naming it and the
``serray features`` command that repairs it: :meth:`FeatureCache.repair`, run by
``serray features`` before it decides what to extract, deletes damaged entries with a
warning naming each, so they count as missing and are extracted again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io
from serray.features.base import Extractor
from serray.workdir import Workdir

__all__ = [
    "FeatureSet",
    "FeatureCache",
    "FeaturesNotExtractedError",
    "LOAD_PARAMS",
    "features_command_hint",
    "entry_dims",
    "npy_problem",
]

log = logging.getLogger(__name__)

#: Parameters that select from stored features at load time (never hashed).
LOAD_PARAMS: tuple[str, ...] = ("layer",)
_FAILURE_COLUMNS = ["file_key", "path", "utt_id", "reason", "error_type", "persistent"]
_STALE_TMP_S = 3600.0


class FeaturesNotExtractedError(LookupError):
    """The requested feature set has not been extracted (for these utterances)."""


def features_command_hint(workdir: str | os.PathLike, name: str, params: Mapping[str, Any] | None = None) -> str:
    """The ``serray features`` command line that extracts ``name`` with ``params``."""
    ps = "".join(f" --param {name}.{k}={_cli_value(v)}" for k, v in (params or {}).items() if k not in LOAD_PARAMS)
    return f"serray features {workdir} --set {name}{ps}"


def _cli_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


@dataclass
class FeatureSet:
    """Features of the utterances of a manifest, in manifest order.

    Attributes:
        name: Extractor name.
        kind: ``vector``, ``sequence`` or ``segments``.
        utt_ids: Utterances that have features (manifest order).
        data: ``[N, D]`` float32 for ``vector``; for ``sequence`` a list of ``[T, D]``;
            for ``segments`` a list of ``[S, C, F, T]``.
        missing: Utterances of the manifest without features (failed or not extracted).
        not_extracted: Those of ``missing`` that an extraction run could still give
            features (their file exists and is not recorded as failing for good).
        shape: Per-sample shape: ``(D,)`` for vector and sequence, ``(C, F, T)`` for segments.
        params: The extractor's hashed parameters.
        key: The cache key.
        feature_names: Names of the ``D`` dimensions when known.
        meta: The cache folder's ``meta.json``.
        layers: How many layers the last axis concatenates (``ssl`` loaded with
            ``layer="all"``: the stored layers, each ``D / layers`` wide); 1 otherwise.
    """

    name: str
    kind: str
    utt_ids: list[str]
    data: Any
    missing: list[str]
    shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    feature_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    not_extracted: list[str] = field(default_factory=list)
    layers: int = 1

    def __len__(self) -> int:
        return len(self.utt_ids)


class FeatureCache:
    """One feature set's cache folder: what is stored, writing entries, reading them.

    Args:
        workdir: Work directory.
        extractor: The extractor whose key names the folder.
    """

    def __init__(self, workdir: str | os.PathLike, extractor: Extractor):
        self.extractor = extractor
        self.workdir = Workdir(workdir)
        self.dir = self.workdir.feature_set(extractor.name, extractor.key())

    # ------------------------------------------------------------------ paths

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    @property
    def failures_path(self) -> Path:
        return self.dir / "failures.parquet"

    @property
    def vectors_dir(self) -> Path:
        return self.dir / "vectors"

    @property
    def arrays_dir(self) -> Path:
        return self.dir / "arrays"

    def array_path(self, file_key: str) -> Path:
        """Where the array of ``file_key`` lives."""
        return self.arrays_dir / file_key[:2] / f"{file_key}.npy"

    @property
    def kind(self) -> str:
        return self.extractor.kind

    # ------------------------------------------------------------------ meta

    def fix_hint(self) -> str:
        """What repairs a damaged file of this set: the ``serray features`` command that wrote it."""
        ext = self.extractor
        hint = features_command_hint(self.workdir.root, ext.name, _changed_params(ext.params, type(ext).defaults))
        return f"run `{hint}`, which re-extracts unreadable files (or delete the file and run it)"

    def read_meta(self) -> dict[str, Any] | None:
        """``meta.json`` or ``None`` when the folder has none yet.

        Raises:
            serray.io.CorruptFileError: ``meta.json`` is not valid JSON (naming it and the fix).
        """
        return io.read_json(self.meta_path, self.fix_hint()) if self.meta_path.is_file() else None

    def write_meta(self, dims: Sequence[int], dtype: str) -> dict[str, Any]:
        """Write ``meta.json`` (atomically) unless it exists with ``dims``; return it."""
        meta = self.read_meta()
        if meta is not None and meta.get("dims") is not None:
            return meta
        ext = self.extractor
        from serray import __version__

        meta = {
            "name": ext.name,
            "key": ext.key(),
            "params": ext.params,
            "versions": ext.versions(),
            "kind": ext.kind,
            "dims": [int(d) for d in dims],
            "dtype": dtype,
            "serray": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **ext.describe(),
        }
        io.write_json(meta, self.meta_path)
        return meta

    # ------------------------------------------------------------------ what is stored

    def _vector_files(self) -> list[Path]:
        if not self.vectors_dir.is_dir():
            return []
        return sorted(p for p in self.vectors_dir.glob("*.parquet") if not p.name.startswith("."))

    def _array_files(self) -> list[Path]:
        if not self.arrays_dir.is_dir():
            return []
        out = []
        with os.scandir(self.arrays_dir) as top:
            for d in top:
                if d.is_dir():
                    with os.scandir(d.path) as inner:
                        out.extend(Path(e.path) for e in inner if e.name.endswith(".npy") and not e.name.startswith("."))
        return out

    def _vector_keys(self, path: Path) -> list[str]:
        """The file keys of one vector Parquet file.

        Raises:
            serray.io.CorruptFileError: The file is not readable Parquet.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path, columns=["file_key"]).column("file_key").to_pylist()
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise io.CorruptFileError(path, f"unreadable feature file, truncated or damaged ({exc})", self.fix_hint()) from None

    def cached_keys(self) -> set[str]:
        """File identities with stored features (an unreadable vector file counts as none,
        with a warning; arrays are listed by name, :meth:`repair` checks them)."""
        if self.kind == "vector":
            keys: set[str] = set()
            for f in self._vector_files():
                try:
                    keys.update(self._vector_keys(f))
                except io.CorruptFileError as exc:
                    log.warning("%s", exc)
            return keys
        return {p.name[:-4] for p in self._array_files()}

    def repair(self) -> list[Path]:
        """Delete every unreadable entry (and an unreadable ``meta.json``), each with a
        warning naming it, so that it counts as missing and is extracted again.

        Checks each file as :meth:`entry_problem` does: one sequential read of the cache.

        Returns:
            The deleted files.
        """
        bad: list[tuple[Path, str]] = []
        if self.meta_path.is_file():
            try:
                self.read_meta()
            except io.CorruptFileError as exc:
                bad.append((self.meta_path, str(exc).split("; ")[0]))
        for f in [*self._vector_files(), *self._array_files()]:
            problem = self.entry_problem(f)
            if problem:
                bad.append((f, f"{f}: {problem}"))
        for path, why in bad:
            log.warning("%s; deleted, it is extracted again", why)
            io.remove_file(path)
        return [p for p, _ in bad]

    def entry_problem(self, path: Path) -> str | None:
        """Why one stored vector Parquet file or ``.npy`` cannot be used (``None`` if it can).

        Checks the Parquet ``file_key`` column or the ``.npy`` header against the file's
        size (:func:`npy_problem`), then the bytes against the checksum written with them;
        a file without a checksum (written before checksums existed) has its values
        checked for NaN and infinity instead.
        """
        try:
            if path.suffix == ".npy":
                problem = npy_problem(path)
                if problem:
                    return problem
            else:
                self._vector_keys(path)
            if not io.verify_checksum(path):
                _check_finite(path, np.load(path) if path.suffix == ".npy" else self._read_vector_file(path)[1])
        except io.CorruptFileError as exc:
            return str(exc).split("; ")[0].removeprefix(f"{path}: ")
        return None

    def size_bytes(self) -> int:
        """Bytes on disk of the whole folder."""
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file()) if self.dir.is_dir() else 0

    # ------------------------------------------------------------------ writing

    def write_entries(self, entries: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Store ``(file_key, path, array)`` entries atomically.

        Vectors go to one new Parquet file for the whole batch; arrays to one ``.npy``
        each. Writes ``meta.json`` first when the folder has none.
        """
        if not entries:
            return
        dtype = self.extractor.storage_dtype
        self.write_meta(entry_dims(self.kind, np.asarray(entries[0][2])), dtype)
        if self.kind == "vector":
            self._write_vectors(entries)
        else:
            for key, _path, arr in entries:
                with io.atomic_path(self.array_path(key), suffix=".npy", checksum=True) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.ascontiguousarray(arr, dtype=dtype))

    def _write_vectors(self, entries: Sequence[tuple[str, str, np.ndarray]]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [np.asarray(a, dtype=np.float32).reshape(-1) for _, _, a in entries]
        width = {f.size for f in flat}
        if len(width) != 1:
            raise ValueError(f"{self.extractor.name}: vectors of different sizes in one batch: {sorted(width)}")
        d = width.pop()
        values = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(flat), type=pa.float32()), d)
        table = pa.table({
            "file_key": pa.array([e[0] for e in entries], type=pa.string()),
            "path": pa.array([str(e[1]) for e in entries], type=pa.string()),
            "values": values,
        })
        name = hashlib.sha1("\n".join(sorted(e[0] for e in entries)).encode()).hexdigest()[:16]
        dest = self.vectors_dir / f"{name}.parquet"
        with io.atomic_path(dest, suffix=".parquet", checksum=True) as tmp:
            pq.write_table(table, tmp)
        return dest

    def consolidate(self) -> None:
        """Merge the vector Parquet files into one (written before the inputs are removed)."""
        files = self._vector_files()
        if self.kind != "vector" or len(files) <= 1:
            return
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for f in files:
            io.verify_checksum(f, self.fix_hint())
        table = pa.concat_tables([pq.read_table(f) for f in files])
        keys = table.column("file_key").to_pylist()
        last = {k: i for i, k in enumerate(keys)}
        if len(last) < len(keys):
            table = table.take(pa.array(sorted(last.values()), type=pa.int64()))
        table = table.take(pc.sort_indices(table, sort_keys=[("file_key", "ascending")]))
        name = "all-" + hashlib.sha1("\n".join(sorted(last)).encode()).hexdigest()[:16]
        dest = self.vectors_dir / f"{name}.parquet"
        with io.atomic_path(dest, suffix=".parquet", checksum=True) as tmp:
            pq.write_table(table, tmp)
        for f in files:
            if f != dest:
                io.remove_file(f)

    def remove_stale_tmp(self, max_age_s: float = _STALE_TMP_S) -> int:
        """Delete temporary files of interrupted writes older than ``max_age_s``; return the count."""
        if not self.dir.is_dir():
            return 0
        now = time.time()
        n = 0
        for p in self.dir.rglob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > max_age_s:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    # ------------------------------------------------------------------ failures

    def read_failures(self) -> pd.DataFrame:
        """Recorded failures (empty frame with the failure columns when none)."""
        if not self.failures_path.is_file():
            return pd.DataFrame({c: pd.Series(dtype=bool if c == "persistent" else object) for c in _FAILURE_COLUMNS})
        return io.read_parquet(self.failures_path)

    def write_failures(self, df: pd.DataFrame) -> None:
        """Replace the failure record (removed when ``df`` is empty)."""
        if df.empty:
            self.failures_path.unlink(missing_ok=True)
            return
        io.write_parquet(df[_FAILURE_COLUMNS].reset_index(drop=True), self.failures_path)

    # ------------------------------------------------------------------ reading

    def read_vectors(self) -> tuple[dict[str, int], np.ndarray]:
        """All stored vectors: ``(file_key -> row, values [N, prod(dims)] float32)``.

        Raises:
            serray.io.CorruptFileError: A file is unreadable, its bytes do not match its
                checksum, or (a file without a checksum) it holds NaN or infinity.
        """
        files = self._vector_files()
        if not files:
            return {}, np.zeros((0, 0), np.float32)
        keys: list[str] = []
        parts = []
        for f in files:
            verified = io.verify_checksum(f, self.fix_hint())
            file_keys, values = self._read_vector_file(f)
            if not verified:  # written before checksums: its values are checked instead
                _check_finite(f, values, self.fix_hint())
            keys.extend(file_keys)
            parts.append(values)
        return {k: i for i, k in enumerate(keys)}, np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _read_vector_file(self, path: Path) -> tuple[list[str], np.ndarray]:
        """``(file keys, values [N, width] float32)`` of one vector Parquet file.

        Raises:
            serray.io.CorruptFileError: The file is not readable Parquet.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            col = table.column("values").combine_chunks()
            values = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
        except (OSError, KeyError, pa.ArrowException) as exc:
            raise io.CorruptFileError(path, f"unreadable feature file, truncated or damaged ({exc})", self.fix_hint()) from None
        return table.column("file_key").to_pylist(), values

    def read_array(self, file_key: str, mmap: bool = False) -> np.ndarray:
        """The stored array of one file.

        Raises:
            serray.io.CorruptFileError: The ``.npy`` is truncated or damaged, its bytes do
                not match its checksum, or (a file without a checksum) it holds NaN or
                infinity (naming it and the fix).
        """
        path = self.array_path(file_key)
        verified = io.verify_checksum(path, self.fix_hint())
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise io.CorruptFileError(path, f"unreadable feature file, truncated or damaged ({exc})", self.fix_hint()) from None
        if not verified:  # written before checksums: its values are checked instead
            _check_finite(path, arr, self.fix_hint())
        return arr

    def summary(self) -> dict[str, Any]:
        """One row of ``serray features --list``."""
        meta = self.read_meta() or {}
        fails = self.read_failures()
        return {
            "set": self.extractor.name,
            "key": self.extractor.key(),
            "params": _short_params(self.extractor.params, type(self.extractor).defaults),
            "kind": self.kind,
            "dims": "x".join(str(d) for d in meta.get("dims", [])) or "?",
            **_key_counts(self.cached_keys()),
            "n_failed": len(fails),
            "size_mb": round(self.size_bytes() / 2**20, 2),
            "path": str(self.dir),
        }


def _key_counts(keys: set[str]) -> dict[str, int]:
    """``n_utterances`` (files' own keys, 20 characters) and ``n_copies`` (augmented copies'
    keys, :func:`serray.features.augment.copy_key`) among cached keys."""
    own = sum(1 for k in keys if len(k) == 20)
    return {"n_utterances": own, "n_copies": len(keys) - own}


def npy_problem(path: str | os.PathLike) -> str | None:
    """Why a ``.npy`` file cannot be a complete array (``None`` when its header parses and
    its size is the header's length plus the data the header describes).

    Reads the header only, so a truncated file is found without reading its values.
    """
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(fh)
            start = fh.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError, EOFError) as exc:
        return f"not a readable .npy file ({exc})"
    if dtype.hasobject:
        return "holds Python objects, not numbers"
    want = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != want:
        return f"truncated or damaged: {size} bytes, its header describes {want}"
    return None


def _check_finite(path: Path, values: np.ndarray, fix: str | None = None) -> None:
    """Refuse stored feature values that hold NaN or infinity, naming the file.

    Raises:
        serray.io.CorruptFileError: Some value is not finite.
    """
    if values.size and not np.isfinite(values).all():
        n = int(values.size - np.isfinite(values).sum())
        raise io.CorruptFileError(path, f"damaged: {n} NaN or infinite feature value(s)", fix)


def entry_dims(kind: str, arr: np.ndarray) -> tuple[int, ...]:
    """Per-utterance dims recorded in ``meta.json``: the shape without its variable axis.

    ``vector``: the whole shape (``[D]``, SSL ``[L, H]``); ``sequence``: without the time
    axis (``[T, D]`` -> ``[D]``, SSL ``[L, T, H]`` -> ``[L, H]``); ``segments``: without the
    segment axis (``[S, C, F, T]`` -> ``[C, F, T]``).
    """
    if kind == "vector":
        return tuple(arr.shape)
    if kind == "sequence":
        return tuple(arr.shape[1:]) if arr.ndim == 2 else (arr.shape[0], *arr.shape[2:])
    return tuple(arr.shape[1:])


def _changed_params(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k in defaults and v != defaults[k]}


def _short_params(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    changed = _changed_params(params, defaults)
    if not changed:
        return "defaults"
    return " ".join(f"{k}={_cli_value(v)}" for k, v in changed.items())
