"""Any corpus described by a table: CSV, TSV or Parquet with the manifest columns.

``root`` is the table file. It needs ``path``, ``speaker`` and ``emotion`` columns and a
``corpus`` column unless the ``corpus`` option (or ``corpus_name``) gives the name;
``utt_id`` is optional (derived as ``<corpus>/<path relative to base_dir, no
extension>``). Relative paths are resolved against the table's folder (or ``base_dir``).
Labels must be canonical names (case is ignored) or be mapped by ``label_map``; a label
mapped to nothing drops its rows (counted in the log). Speakers are prefixed with the
corpus (``<corpus>_<speaker>``) unless already prefixed. ``gender`` values such as
``F``/``female``/``Male`` become ``f``/``m``; ``naturalness`` values must be ``acted`` or
``natural`` (case ignored; empty cells stay unknown). Every other column is kept.

Options:
    corpus: Corpus name for rows without one (the table has no ``corpus`` column, or
        empty cells).
    label_map: Source label -> canonical label; a mapping, a JSON/YAML file, or
        ``"ang:angry,hap:happy,xxx:"`` (an empty target drops the label).
    base_dir: Folder that relative paths are resolved against (default: the table's).
    language: ISO 639-1 code for a table without a ``language`` column.
    naturalness: ``acted`` or ``natural`` for a table without a ``naturalness`` column.
    prefix_speakers: Prefix speakers with the corpus name (default true).

Example:
    >>> import pandas as pd, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> pd.DataFrame({"path": ["a/x.wav"], "speaker": ["s1"], "emotion": ["Angry"]}).to_csv(d / "t.csv", index=False)
    >>> rows = scan(d / "t.csv", corpus="mine").rows
    >>> rows[["utt_id", "speaker", "emotion"]].values.tolist()
    [['mine/a/x', 'mine_s1', 'angry']]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from serray.corpora.base import Adapter, Scan, layout_error, nfc, opt_bool, opt_mapping, order_columns, skipped_frame
from serray.labels import CANONICAL, EXTRA

__all__ = ["ADAPTER", "read_table", "scan"]

log = logging.getLogger(__name__)

NAME = "table"
LAYOUT = (
    "a CSV/TSV/Parquet table with columns path, speaker, emotion (+ corpus, optional utt_id, gender, ...), "
    "e.g. my_corpus.csv with a row 'wav/s01_001.wav,s01,angry'"
)
_FIX = "pass the table file (.csv, .tsv or .parquet)"
_GENDER = {"f": "f", "female": "f", "w": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}
_NATURALNESS = ("acted", "natural")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (``.csv``), TSV (``.tsv``/``.tab``) or Parquet (``.parquet``/``.pq``) table.

    Raises:
        CorpusLayoutError: Missing file, a folder, or an unknown extension.
    """
    path = Path(path)
    if not path.exists():
        raise layout_error(NAME, path, "no such file", LAYOUT, _FIX)
    if path.is_dir():
        raise layout_error(NAME, path, "is a folder, not a table file", LAYOUT, _FIX)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype={"speaker": str, "utt_id": str, "session": str})
    if suffix in {".tsv", ".tab"}:
        return pd.read_csv(path, sep="\t", dtype={"speaker": str, "utt_id": str, "session": str})
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    raise layout_error(NAME, path, f"unknown table type {suffix!r}", LAYOUT, _FIX)


def scan(
    root: Path,
    corpus_name: str | None = None,
    corpus: str | None = None,
    label_map: Any = None,
    base_dir: str | os.PathLike | None = None,
    language: str | None = None,
    naturalness: str | None = None,
    prefix_speakers: Any = True,
) -> Scan:
    """Read a manifest table (see the module docstring for columns and options).

    ``corpus_name`` (from :func:`~serray.corpora.prepare_corpus`) overrides every row's
    corpus; ``corpus`` only fills rows without one.
    """
    root = Path(root)
    df = read_table(root)
    mapping = opt_mapping("label_map", label_map)
    prefix = opt_bool("prefix_speakers", prefix_speakers)
    if naturalness is not None and naturalness not in _NATURALNESS:
        raise ValueError(f"option naturalness={naturalness!r} must be one of {_NATURALNESS}")
    base = Path(base_dir) if base_dir is not None else root.parent
    if base_dir is not None and not base.is_dir():
        raise ValueError(f"option base_dir={str(base)!r} is not a folder")

    df = _corpus_rows(df, root, corpus_name, corpus)
    df = _canonical_emotions(df, root, mapping)
    _paths_ids_speakers(df, base, prefix)
    if "gender" in df.columns:
        df["gender"] = _gender_column(df["gender"], root)
    if language is not None and "language" not in df.columns:
        df["language"] = language
    if "naturalness" in df.columns:
        df["naturalness"] = _naturalness_column(df["naturalness"], root)
    elif naturalness is not None:
        df["naturalness"] = naturalness
    rows = order_columns(df.sort_values("utt_id", kind="stable"))
    return Scan(rows=rows, skipped=skipped_frame([]))


def _corpus_rows(df: pd.DataFrame, root: Path, corpus_name: str | None, corpus: str | None) -> pd.DataFrame:
    """A copy of the table with its required columns checked and filled, and every row's ``corpus``."""
    need = ["path", "speaker", "emotion"] + ([] if (corpus_name or corpus) else ["corpus"])
    missing = [c for c in need if c not in df.columns]
    if missing:
        hint = " (or pass the corpus option, e.g. -o corpus=mine)" if "corpus" in missing else ""
        raise layout_error(NAME, root, f"missing column(s) {missing}{hint}; found {list(df.columns)}", LAYOUT,
                           "add the columns or rename yours")
    if df.empty:
        raise layout_error(NAME, root, "the table has no rows", LAYOUT, _FIX)
    df = df.copy()
    if corpus_name:
        df["corpus"] = corpus_name
    elif corpus:
        df["corpus"] = df["corpus"].where(_filled(df["corpus"]), corpus) if "corpus" in df.columns else corpus
    for col in ("path", "speaker", "emotion", "corpus"):
        empty = ~_filled(df[col])
        if empty.any():
            rows = (empty[empty].index[:5] + 2).tolist()  # +2: header line, 1-based
            raise layout_error(NAME, root, f"{int(empty.sum())} empty value(s) in column {col!r} (lines {rows} ...)",
                               LAYOUT, "fill or remove those rows")
    df["corpus"] = df["corpus"].astype(str).str.strip()
    return df


def _canonical_emotions(df: pd.DataFrame, root: Path, mapping: dict[str, str | None] | None) -> pd.DataFrame:
    """The rows with canonical ``emotion`` names (``label_map`` applied; rows it maps to nothing dropped)."""
    emotion = df["emotion"].astype(str).str.strip()
    if mapping:
        emotion = emotion.map(lambda e: mapping.get(e, e))
        dropped = emotion.isna()
        if dropped.any():
            log.info("table: %d row(s) dropped by label_map: %s", int(dropped.sum()),
                     df.loc[dropped, "emotion"].value_counts().to_dict())
            df, emotion = df.loc[~dropped], emotion[~dropped]
    emotion = emotion.str.lower()
    unknown = sorted(set(emotion) - set(CANONICAL) - set(EXTRA))
    if unknown:
        raise layout_error(
            NAME, root, f"emotion labels {unknown} are not canonical ({', '.join(CANONICAL)})", LAYOUT,
            "map them with the label_map option, e.g. label_map=ang:angry,hap:happy (an empty target drops a label)",
        )
    df["emotion"] = emotion
    return df


def _paths_ids_speakers(df: pd.DataFrame, base: Path, prefix: bool) -> None:
    """In place: absolute ``path``, ``utt_id`` (given, else ``<corpus>/<path below base>``) and ``speaker``."""
    paths = [Path(str(p).strip()) for p in df["path"]]
    paths = [p if p.is_absolute() else base / p for p in paths]
    df["path"] = [os.path.abspath(p) for p in paths]
    derived = [f"{c}/{_rel_id(p, base)}" for c, p in zip(df["corpus"], paths)]
    if "utt_id" in df.columns:
        df["utt_id"] = [str(u).strip() if isinstance(u, str) and u.strip() else d for u, d in zip(df["utt_id"], derived)]
    else:
        df["utt_id"] = derived
    speaker = df["speaker"].astype(str).str.strip()
    if prefix:
        speaker = pd.Series(
            [s if s.startswith(f"{c}_") else f"{c}_{s}" for c, s in zip(df["corpus"], speaker)], index=df.index
        )
    df["speaker"] = speaker


def _gender_column(col: pd.Series, root: Path) -> pd.Series:
    """``f``/``m`` (female/male, woman/man, w; case ignored); empty cells stay unknown."""
    g = col.where(_filled(col))
    norm = g.map(lambda v: _GENDER.get(str(v).strip().lower()) if isinstance(v, str) else None)
    bad = sorted(g[norm.isna() & g.notna()].astype(str).unique())
    if bad:
        raise layout_error(NAME, root, f"gender values {bad} are not f/m (female/male)", LAYOUT, "fix or empty those cells")
    return norm


def _naturalness_column(col: pd.Series, root: Path) -> pd.Series:
    """``acted``/``natural`` (case ignored, spaces stripped); empty cells stay unknown."""
    filled = _filled(col)
    norm = col.where(filled).map(lambda v: str(v).strip().lower() if isinstance(v, str) else None)
    bad = sorted(col[filled & ~norm.isin(_NATURALNESS)].astype(str).unique())
    if bad:
        raise layout_error(NAME, root, f"naturalness values {bad} are not {list(_NATURALNESS)}", LAYOUT,
                           "fix or empty those cells")
    return norm.where(norm.isin(_NATURALNESS), None)


def _filled(s: pd.Series) -> pd.Series:
    return s.notna() & (s.astype(str).str.strip().str.len() > 0)


def _rel_id(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (or without its anchor when outside), no extension."""
    path = Path(os.path.abspath(path))
    try:
        rel = path.relative_to(os.path.abspath(base))
    except ValueError:
        rel = path.relative_to(path.anchor)
    return nfc(rel.with_suffix("").as_posix())


ADAPTER = Adapter(
    name=NAME,
    title="generic table (CSV/TSV/Parquet)",
    layout=LAYOUT,
    scan=scan,
    options=("corpus", "label_map", "base_dir", "language", "naturalness", "prefix_speakers"),
)
