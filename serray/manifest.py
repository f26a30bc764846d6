"""The manifest: one row per utterance, the contract between corpora and everything else.

Required columns: ``utt_id`` (unique), ``path`` (absolute), ``corpus``, ``speaker``
(unique across corpora: adapters prefix it with the corpus name), ``emotion`` (canonical
label). Optional: ``gender`` (f/m), ``language`` (ISO 639-1), ``naturalness``
(acted/natural), ``session``, ``duration_s``, ``valence``, ``arousal``, and any further
corpus-specific columns.

Manifests live in a work directory as ``W/manifests/<corpus>.parquet``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import pandas as pd

from serray import io
from serray.labels import CANONICAL, EXTRA
from serray.workdir import Workdir

__all__ = [
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "ManifestError",
    "validate_manifest",
    "manifest_dir",
    "write_manifest",
    "read_manifest",
    "load_manifests",
]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("utt_id", "path", "corpus", "speaker", "emotion")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "gender", "language", "naturalness", "session", "duration_s", "valence", "arousal",
)


class ManifestError(ValueError):
    """A manifest that breaks the contract; the message names the source and the fix."""


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check ``df`` against the manifest contract and return it with normalised dtypes.

    Raises:
        ManifestError: Missing required columns, duplicate ``utt_id``, empty values,
            unknown emotion labels, or gender values other than f/m.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing required column(s) {missing}; a manifest needs {list(REQUIRED_COLUMNS)}"
        )
    if df.empty:
        raise ManifestError(f"{source}: no utterances")
    for col in REQUIRED_COLUMNS:
        if df[col].isna().any() or (df[col].astype(str).str.len() == 0).any():
            n = int(df[col].isna().sum() + (df[col].astype(str).str.len() == 0).sum())
            raise ManifestError(f"{source}: column {col!r} has {n} empty value(s); fill them or drop those rows")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{source}: duplicate utt_id values, e.g. {dup.iloc[:3].tolist()}; utt_id must be unique")
    unknown = sorted(set(df["emotion"]) - set(CANONICAL) - set(EXTRA))
    if unknown:
        raise ManifestError(
            f"{source}: emotion labels {unknown} are not canonical; map them to {list(CANONICAL)}"
        )
    if "gender" in df.columns:
        bad = sorted(set(df["gender"].dropna()) - {"f", "m"})
        if bad:
            raise ManifestError(f"{source}: gender values {bad} are not 'f'/'m'")
    out = df.copy()
    for col in ("utt_id", "path", "corpus", "speaker", "emotion"):
        out[col] = out[col].astype(str)
    return out.reset_index(drop=True)


def manifest_dir(workdir: str | Path) -> Path:
    """``W/manifests`` (:attr:`serray.workdir.Workdir.manifests_dir`)."""
    return Workdir(workdir).manifests_dir


def write_manifest(df: pd.DataFrame, workdir: str | Path, name: str) -> Path:
    """Validate and atomically write ``df`` as ``W/manifests/<name>.parquet``."""
    df = validate_manifest(df, source=f"manifest {name!r}")
    path = Workdir(workdir).manifest(name)
    io.write_parquet(df, path)
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate one manifest file (Parquet or CSV).

    Raises:
        ManifestError: No such file, or rows that break the contract.
        serray.io.CorruptFileError: A Parquet manifest that is truncated or damaged.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: no such manifest; run `serray data prepare ...` first")
    fix = "run `serray data prepare CORPUS ROOT --workdir W` again for it (or restore the file)"
    df = pd.read_csv(path) if path.suffix.lower() == ".csv" else io.read_parquet(path, fix)
    return validate_manifest(df, source=str(path))


def load_manifests(workdir: str | Path, corpora: Iterable[str] | None = None) -> pd.DataFrame:
    """Concatenate the manifests of a work directory (all, or the named corpora).

    Raises:
        ManifestError: No manifests, a named corpus without a manifest, or utt_id
            collisions between manifests.
    """
    mdir = manifest_dir(workdir)
    files = sorted(mdir.glob("*.parquet")) if mdir.exists() else []
    if not files:
        raise ManifestError(
            f"{workdir}: no manifests under {mdir}; run `serray data prepare CORPUS ROOT --workdir {workdir}` "
            "or `serray data synth --out DIR`"
        )
    by_name = {f.stem: f for f in files}
    if corpora is not None:
        wanted = list(corpora)
        missing = [c for c in wanted if c not in by_name]
        if missing:
            raise ManifestError(f"{workdir}: no manifest for {missing}; available: {sorted(by_name)}")
        files = [by_name[c] for c in wanted]
    df = pd.concat([read_manifest(f) for f in files], ignore_index=True)
    from serray.duplicates import use_digest_store

    use_digest_store(workdir)  # the leakage guard's audio digests persist in W/cache
    return validate_manifest(df, source=f"manifests of {workdir}")
