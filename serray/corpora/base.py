"""Shared machinery of the corpus adapters: the adapter record, layout errors, ``prepare_corpus``.

An adapter turns one corpus's own folder layout into manifest rows (see
:mod:`serray.manifest`). :func:`prepare_corpus` runs an adapter, checks every audio file,
excludes and reports the unusable ones, fills ``duration_s`` and writes
``W/manifests/<name>.parquet`` (plus ``W/manifests/<name>.bad.csv`` when files were
excluded). Running it twice gives the same files.

Example:
    >>> import tempfile
    >>> try:
    ...     prepare_corpus("emodb", tempfile.mkdtemp())
    ... except CorpusLayoutError as exc:
    ...     print(str(exc).split(":")[0])
    emodb
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io
from serray.audio import check_files
from serray.labels import CANONICAL, EXTRA
from serray.manifest import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, validate_manifest, write_manifest
from serray.workdir import Workdir

__all__ = [
    "CorpusLayoutError",
    "Adapter",
    "Scan",
    "PrepareResult",
    "adapter_names",
    "get_adapter",
    "prepare_corpus",
]

log = logging.getLogger(__name__)

#: adapter name -> module that defines ``ADAPTER`` (imported on first use).
_ADAPTER_MODULES: dict[str, str] = {
    "emodb": "serray.corpora.emodb",
    "emovo": "serray.corpora.emovo",
    "ravdess": "serray.corpora.ravdess",
    "iemocap": "serray.corpora.iemocap",
    "cremad": "serray.corpora.cremad",
    "tess": "serray.corpora.tess",
    "cafe": "serray.corpora.cafe",
    "msppodcast": "serray.corpora.msppodcast",
    "table": "serray.corpora.table",
    "audformat": "serray.corpora.audformat_db",
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BAD_COLUMNS = ["path", "reason"]
#: Columns of ``bad`` / ``<name>.bad.csv``: ``excluded`` is False for a file kept with a warning.
_REPORT_COLUMNS = ["path", "reason", "excluded"]


class CorpusLayoutError(ValueError):
    """A corpus root that is missing or does not have the adapter's layout.

    The message names the folder, the expected naming scheme (with an example path) and
    the fix.
    """


@dataclass(frozen=True)
class Scan:
    """What an adapter found under a corpus root.

    Attributes:
        rows: One row per labelled audio file: ``utt_id``, absolute ``path``, ``corpus``,
            ``speaker`` (prefixed with the corpus), canonical ``emotion`` and any further
            columns; no ``duration_s`` yet.
        skipped: ``(path, reason)`` of audio files under the root that were left out
            because they do not follow the corpus's naming scheme or lack a label; they
            are reported with the unusable files.
    """

    rows: pd.DataFrame
    skipped: pd.DataFrame


@dataclass(frozen=True)
class Adapter:
    """A corpus adapter.

    Attributes:
        name: Adapter name (also the default corpus name).
        title: Human-readable corpus name.
        layout: The naming scheme with an example path (quoted in layout errors).
        scan: ``scan(root: Path, corpus_name: str | None, **options) -> Scan``; ``corpus_name`` is
            the corpus name to write (``None``: the adapter's default).
        options: Names of the adapter-specific options ``scan`` accepts.
    """

    name: str
    title: str
    layout: str
    scan: Callable[..., Scan]
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrepareResult:
    """Outcome of :func:`prepare_corpus`.

    Attributes:
        manifest: The validated manifest (usable files only, sorted by ``utt_id``).
        bad: ``(path, reason, excluded)`` of every excluded file (unusable audio:
            unreadable, truncated, silence/DC only, ...; or audio files that do not
            follow the naming scheme) and, with ``excluded`` False, of every file kept
            with a warning (float samples beyond full scale); empty when none.
        manifest_path: ``W/manifests/<name>.parquet``, or ``None`` without a workdir.
        bad_path: ``W/manifests/<name>.bad.csv`` when ``bad`` has rows, else ``None``.
    """

    manifest: pd.DataFrame
    bad: pd.DataFrame
    manifest_path: Path | None
    bad_path: Path | None


def adapter_names() -> list[str]:
    """Names of the corpus adapters, in the order they are documented."""
    return list(_ADAPTER_MODULES)


def get_adapter(name: str) -> Adapter:
    """The adapter called ``name``.

    Raises:
        ValueError: Unknown name (the message lists the available adapters).
    """
    if name not in _ADAPTER_MODULES:
        raise ValueError(f"unknown corpus adapter {name!r}; available: {', '.join(adapter_names())}")
    return importlib.import_module(_ADAPTER_MODULES[name]).ADAPTER


def prepare_corpus(
    name: str,
    root: str | os.PathLike,
    workdir: str | os.PathLike | None = None,
    *,
    check_audio: bool = True,
    corpus_name: str | None = None,
    exclude_out_of_range: bool = False,
    **options: Any,
) -> PrepareResult:
    """Scan a corpus with adapter ``name`` and build (and optionally write) its manifest.

    Every audio file is checked with :func:`serray.audio.check_files`; unusable files and
    audio files that do not follow the corpus's naming scheme are excluded, returned in
    ``bad``, logged as a warning with their count and, with a ``workdir``, written to
    ``W/manifests/<name>.bad.csv`` (a stale report from an earlier run is removed when
    nothing is excluded). Idempotent: the same corpus gives the same files.

    Args:
        name: Adapter name, one of :func:`adapter_names`.
        root: Corpus folder (for ``table``: the table file).
        workdir: Work directory; ``None`` builds the manifest without writing anything.
        check_audio: Decode every file (finds NaN samples, silence/DC-only files and
            float samples beyond full scale); ``False`` reads the headers only (still
            catches unreadable, empty and truncated WAV files).
        corpus_name: Corpus name to use instead of the adapter's (``corpus`` column,
            ``utt_id`` and speaker prefixes, manifest file name), e.g. ``"emodb16k"`` for a
            resampled copy.
        exclude_out_of_range: Exclude float files with samples beyond full scale
            (default: keep them, listed in ``bad`` with ``excluded`` False and a warning).
        **options: Adapter-specific options (see each adapter module); string values,
            as the CLI passes them, are converted.

    Returns:
        A :class:`PrepareResult`.

    Raises:
        ValueError: Unknown adapter or option, or a ``corpus_name`` that is not a plain
            file name.
        CorpusLayoutError: ``root`` is missing or does not have the corpus's layout.
        serray.manifest.ManifestError: The rows break the manifest contract.
    """
    adapter = _checked_adapter(name, corpus_name, options)
    t0 = time.perf_counter()
    scan = adapter.scan(Path(root), corpus_name, **options)
    rows = scan.rows.reset_index(drop=True)
    ok, bad_audio, durations = check_files(rows["path"].tolist(), full=check_audio, exclude_out_of_range=exclude_out_of_range)
    bad = pd.concat([_bad_frame(scan.skipped), _bad_frame(bad_audio)], ignore_index=True)
    bad = bad.sort_values("path", kind="stable").reset_index(drop=True)
    manifest = rows.loc[ok].copy()
    manifest["duration_s"] = durations[ok]
    manifest = order_columns(manifest.sort_values("utt_id", kind="stable"))
    mname = _manifest_name(corpus_name, manifest, adapter)

    bad_path = _write_bad_report(bad, workdir, mname) if workdir is not None else None
    _warn_bad(mname, bad, len(rows) + len(scan.skipped), bad_path)
    if manifest.empty:
        raise CorpusLayoutError(
            f"{name}: every one of the {len(bad)} audio file(s) under {root} was excluded "
            f"(e.g. {bad['path'].iloc[0] if len(bad) else '-'}: {bad['reason'].iloc[0] if len(bad) else '-'}); "
            "fix or replace the files"
        )
    manifest = validate_manifest(manifest, source=f"{name} manifest from {root}")
    manifest_path = write_manifest(manifest, workdir, mname) if workdir is not None else None
    log.info(
        "%s: %d utterances, %d speakers, %d emotions%s (%.1f s)",
        mname, len(manifest), manifest["speaker"].nunique(), manifest["emotion"].nunique(),
        f" -> {manifest_path}" if manifest_path else "", time.perf_counter() - t0,
    )
    return PrepareResult(manifest=manifest, bad=bad, manifest_path=manifest_path, bad_path=bad_path)


def _checked_adapter(name: str, corpus_name: str | None, options: Mapping[str, Any]) -> Adapter:
    """The adapter ``name``, with ``options`` and ``corpus_name`` checked for it."""
    adapter = get_adapter(name)
    unknown = sorted(set(options) - set(adapter.options))
    if unknown:
        accepted = ", ".join(adapter.options) if adapter.options else "none"
        raise ValueError(f"corpus adapter {name!r} has no option(s) {unknown}; accepted options: {accepted}")
    if corpus_name is not None and not _SAFE_NAME.match(corpus_name):
        raise ValueError(
            f"corpus_name {corpus_name!r} must be a plain name (letters, digits, '_', '-', '.'), e.g. 'emodb16k'"
        )
    return adapter


def _write_bad_report(bad: pd.DataFrame, workdir: str | os.PathLike, mname: str) -> Path | None:
    """Write ``W/manifests/<mname>.bad.csv`` when ``bad`` has rows (else remove a stale one); its path or ``None``."""
    bad_path = Workdir(workdir).manifests_dir / f"{mname}.bad.csv"
    if len(bad):
        with io.atomic_path(bad_path, suffix=".csv") as tmp:
            bad.to_csv(tmp, index=False)
        return bad_path
    with contextlib.suppress(FileNotFoundError):
        bad_path.unlink()
    return None


# ---------------------------------------------------------------- helpers for adapters


def layout_error(corpus: str, folder: str | os.PathLike, problem: str, layout: str, fix: str) -> CorpusLayoutError:
    """A :class:`CorpusLayoutError` whose message names the folder, the scheme and the fix."""
    return CorpusLayoutError(f"{corpus}: {folder}: {problem}; expected {layout}; {fix}")


def require_dir(root: Path, adapter: Adapter, fix: str) -> Path:
    """``root`` as an existing folder, else a :class:`CorpusLayoutError`."""
    if not root.exists():
        raise layout_error(adapter.name, root, "no such folder", adapter.layout, fix)
    if not root.is_dir():
        raise layout_error(adapter.name, root, "is a file, not a folder", adapter.layout, fix)
    return root


def find_layout_dir(root: Path, accept: Callable[[Path], bool], adapter: Adapter, problem: str, fix: str, max_depth: int = 2) -> Path:
    """``root`` if ``accept(root)``, else the single accepted folder up to ``max_depth`` below.

    Lets users pass the folder an archive unpacked to (e.g. ``TESS/`` holding
    ``TESS Toronto emotional speech set data/``) instead of the corpus folder itself.

    Raises:
        CorpusLayoutError: No accepted folder (message: ``problem``), or several at the
            shallowest level that has any (the message lists them).
    """
    level = [root]
    for _ in range(max_depth + 1):
        found = [d for d in level if accept(d)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise layout_error(
                adapter.name, root, f"several copies of the corpus found: {[str(d) for d in found]}", adapter.layout,
                "pass one of these folders",
            )
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        if not level:
            break
    raise layout_error(adapter.name, root, problem, adapter.layout, fix)


def list_audio(folder: Path, extensions: Sequence[str] = (".wav",), recursive: bool = True) -> list[Path]:
    """Audio files under ``folder`` (sorted; hidden files such as macOS ``._x.wav`` skipped)."""
    exts = {e.lower() for e in extensions}
    it = folder.rglob("*") if recursive else folder.iterdir()
    out = [
        p for p in it
        if p.suffix.lower() in exts and not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file()
    ]
    return sorted(out)


def nfc(text: str) -> str:
    """Unicode NFC form (file names from macOS archives come decomposed)."""
    return unicodedata.normalize("NFC", text)


def build_rows(
    records: Iterable[Mapping[str, Any]],
    corpus: str,
    base: Path,
    *,
    language: str | None = None,
    naturalness: str | None = None,
) -> pd.DataFrame:
    """Manifest rows from per-file records.

    Each record holds at least ``path`` (a :class:`~pathlib.Path` under ``base``), the
    native ``speaker`` id and the canonical ``emotion``. Adds ``utt_id =
    "<corpus>/<path relative to base, no extension>"`` (NFC), the absolute ``path``,
    ``corpus``, ``speaker = "<corpus>_<native id>"`` and ``language``/``naturalness`` when
    given; sorts by ``utt_id`` and puts the contract columns first.
    """
    df = pd.DataFrame(list(records))
    if df.empty:
        return pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    paths = [Path(p) for p in df["path"]]
    df["utt_id"] = [f"{corpus}/{nfc(p.relative_to(base).with_suffix('').as_posix())}" for p in paths]
    df["path"] = [os.path.abspath(p) for p in paths]
    df["corpus"] = corpus
    df["speaker"] = [f"{corpus}_{s}" for s in df["speaker"].astype(str)]
    if language is not None:
        df["language"] = language
    if naturalness is not None:
        df["naturalness"] = naturalness
    unknown = sorted(set(df["emotion"]) - set(CANONICAL) - set(EXTRA))
    if unknown:  # an adapter bug, not a user error
        raise AssertionError(f"{corpus}: adapter produced non-canonical labels {unknown}")
    return order_columns(df.sort_values("utt_id", kind="stable"))


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first (required, then optional), the rest in their order; fresh index."""
    first = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in df.columns]
    rest = [c for c in df.columns if c not in first]
    return df[first + rest].reset_index(drop=True)


def skipped_frame(items: Iterable[tuple[str | os.PathLike, str]]) -> pd.DataFrame:
    """A ``(path, reason)`` DataFrame of skipped files (absolute paths)."""
    return pd.DataFrame([(os.path.abspath(p), r) for p, r in items], columns=_BAD_COLUMNS)


def check_duplicates(corpus: str, keys: Mapping[str, list[Path]], layout: str) -> None:
    """Raise when one recording (``key``) appears under several paths (e.g. two copies)."""
    dups = {k: v for k, v in keys.items() if len(v) > 1}
    if dups:
        k, v = next(iter(sorted(dups.items())))
        raise CorpusLayoutError(
            f"{corpus}: {len(dups)} recording(s) found more than once, e.g. {k!r} at {[str(p) for p in v]}; "
            f"expected each file once ({layout}); pass the folder of one copy only"
        )


# ---------------------------------------------------------------- option parsing (CLI passes strings)


def opt_float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float | None:
    """``value`` as a float within ``[low, high]`` (``None`` and ``""`` stay ``None``)."""
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r} is not a number") from None
    if (low is not None and out < low) or (high is not None and out > high):
        raise ValueError(f"option {name}={out} must lie in [{low}, {high}]")
    return out


def opt_bool(name: str, value: Any) -> bool:
    """``value`` as a bool (accepts true/false/yes/no/1/0 strings)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "y", "on"}:
        return True
    if text in {"0", "false", "no", "n", "off"}:
        return False
    raise ValueError(f"option {name}={value!r} is not a boolean (use true or false)")


def opt_list(name: str, value: Any) -> list[str] | None:
    """``value`` as a list of strings (a comma-separated string is split)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, Iterable):
        items = [str(v).strip() for v in value]
    else:
        raise ValueError(f"option {name}={value!r} must be a list or a comma-separated string")
    items = [v for v in items if v]
    if not items:
        raise ValueError(f"option {name}={value!r} is empty")
    return items


def opt_mapping(name: str, value: Any) -> dict[str, str | None] | None:
    """``value`` as a dict: a mapping, a JSON/YAML file path, or ``"a:b,c:d"`` text."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    if isinstance(value, (str, os.PathLike)):
        text = str(value)
        p = Path(text)
        if p.suffix.lower() in {".json", ".yaml", ".yml"}:
            if not p.is_file():
                raise ValueError(f"option {name}: no such file {p}")
            data = json.loads(p.read_text(encoding="utf-8")) if p.suffix.lower() == ".json" else io.read_yaml(p)
            if not isinstance(data, Mapping):
                raise ValueError(f"option {name}: {p} must hold a mapping of source label -> target label")
            return opt_mapping(name, data)
        out: dict[str, str | None] = {}
        for item in text.split(","):
            if not item.strip():
                continue
            if ":" not in item:
                raise ValueError(f"option {name}: {item!r} is not SOURCE:TARGET (e.g. {name}=ang:angry,hap:happy)")
            k, v = item.split(":", 1)
            out[k.strip()] = v.strip() or None
        return out
    raise ValueError(f"option {name}={value!r} must be a mapping, a JSON/YAML file or 'a:b,c:d'")


# ---------------------------------------------------------------- private


def _bad_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``(path, reason, excluded)`` rows (``excluded`` True where the input has no such column)."""
    if df is None or df.empty:
        return pd.DataFrame({c: pd.Series(dtype=bool if c == "excluded" else object) for c in _REPORT_COLUMNS})
    out = df[_BAD_COLUMNS].astype(str)
    out["excluded"] = df["excluded"].astype(bool).to_numpy() if "excluded" in df.columns else True
    return out


def _warn_bad(mname: str, bad: pd.DataFrame, n_files: int, bad_path: Path | None) -> None:
    """One warning line for the excluded files and one for those kept with a problem."""
    where = f"; listed in {bad_path}" if bad_path else ""
    excluded, kept = bad[bad["excluded"].astype(bool)], bad[~bad["excluded"].astype(bool)]
    if len(excluded):
        log.warning(
            "%s: %d of %d audio file(s) excluded (unusable or not following the naming scheme), e.g. %s: %s%s",
            mname, len(excluded), n_files, excluded["path"].iloc[0], excluded["reason"].iloc[0], where,
        )
    if len(kept):
        log.warning("%s: %d of %d audio file(s) kept with a problem, e.g. %s: %s%s",
                    mname, len(kept), n_files, kept["path"].iloc[0], kept["reason"].iloc[0], where)


def _manifest_name(corpus_name: str | None, manifest: pd.DataFrame, adapter: Adapter) -> str:
    if corpus_name:
        return corpus_name
    corpora = manifest["corpus"].unique() if len(manifest) else []
    if len(corpora) == 1 and _SAFE_NAME.match(str(corpora[0])):
        return str(corpora[0])
    return adapter.name
