"""Any corpus distributed in audformat (audb): a database folder with ``db.yaml`` and its tables.

``root`` is the database folder (the one holding ``db.yaml``, as ``audb.load`` or
``audformat.Database.save`` leave it; or a folder up to two levels above it). The
database is read with the ``audformat`` package (``pip install 'serray[audformat]'``).

What becomes what:

- **Emotion**: a column named ``emotion`` (or whose scheme is ``emotion``; another with
  the ``emotion_column`` option) of the filewise tables that have it; with the ``table``
  option only that table. Its labels are mapped to serray's canonical names: canonical
  names and the usual nouns/adjectives (``anger``, ``happiness``, ``sadness``, ``fearful``,
  ...; case ignored) map by themselves, others with ``label_map`` (an empty target drops
  the label). The database's own label stays in ``emotion_native``. Files without a label
  are left out (counted in the log); a file labelled in two tables must carry one label.
- **Speaker**: a column named ``speaker`` (or whose scheme is ``speaker``; another with
  ``speaker_column``) of any filewise table; prefixed with the corpus (``<corpus>_<id>``).
  Files without a speaker are skipped and listed with the unusable files.
- **Gender**: the speaker scheme's ``gender`` label (its labels as a mapping, or the misc
  table they name), else a ``gender`` column; ``female``/``male``/``f``/``m``/``w`` become
  ``f``/``m``, anything else stays unknown.
- **Splits**: a file in a table with a split gets ``split`` from the split's type:
  ``train``, ``development`` (``dev``), and for ``test`` the split's id (``test``,
  ``test1``, ...), so ``--protocol split`` uses them. ``other`` splits stay empty.
- **Language**: the ``language`` option, else the database's single language (ISO 639-3
  codes of common languages become ISO 639-1); **naturalness** only from its option.

The corpus name is the database's name unless ``--name`` gives one. Segmented tables
(start/end per segment) are refused: serray labels whole files.

Options:
    table: The table holding the emotion labels (default: every filewise table with the column).
    emotion_column: The emotion column (default: ``emotion``, or the column with scheme ``emotion``).
    speaker_column: The speaker column (default: ``speaker``, or the column with scheme ``speaker``).
    label_map: Source label -> canonical label (``"anger:angry,other:"``, or a JSON/YAML file).
    language: ISO 639-1 code of every row.
    naturalness: ``acted`` or ``natural`` for every row.

Example:
    >>> canonical_label("Happiness"), canonical_label("fearful"), canonical_label("calm")
    ('happy', 'fear', 'calm')
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from serray.corpora.base import Adapter, Scan, find_layout_dir, layout_error, nfc, opt_mapping, order_columns, require_dir, skipped_frame
from serray.labels import CANONICAL, EXTRA

__all__ = ["ADAPTER", "SYNONYMS", "canonical_label", "scan"]

log = logging.getLogger(__name__)

NAME = "audformat"
LAYOUT = ("an audformat database folder: db.yaml plus its tables (e.g. db.emotion.csv) with filewise emotion and "
          "speaker columns, e.g. emodb/db.yaml and emodb/wav/03a01Fa.wav")
_FIX = "pass the folder holding db.yaml (as audb.load or audformat's Database.save leave it)"
#: Common emotion names in audformat databases -> canonical serray names.
SYNONYMS: dict[str, str] = {
    "anger": "angry", "happiness": "happy", "joy": "happy", "sadness": "sad", "fearful": "fear", "fearfulness": "fear",
    "anxiety": "fear", "disgusted": "disgust", "surprised": "surprise", "bored": "boredom", "neutrality": "neutral",
    "calmness": "calm", "frustration": "frustrated", "excitement": "excited",
}
_GENDER = {"f": "f", "female": "f", "w": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}
_ISO639_3 = {"deu": "de", "ger": "de", "eng": "en", "ita": "it", "fra": "fr", "fre": "fr", "spa": "es", "por": "pt",
             "nld": "nl", "dut": "nl", "pol": "pl", "rus": "ru", "cmn": "zh", "zho": "zh", "chi": "zh", "jpn": "ja",
             "kor": "ko", "ell": "el", "gre": "el", "tur": "tr", "ara": "ar", "fas": "fa", "per": "fa", "urd": "ur",
             "ben": "bn", "hin": "hi", "swe": "sv", "dan": "da", "fin": "fi", "est": "et", "hun": "hu", "ces": "cs"}
_SPLIT_TYPES = {"train": "train", "dev": "development", "develop": "development", "development": "development"}


def canonical_label(label: str, mapping: dict[str, str | None] | None = None) -> str | None:
    """A database label as a canonical name (``label_map`` first, then :data:`SYNONYMS`); ``None``: not known."""
    text = str(label).strip()
    if mapping and text in mapping:
        return mapping[text]
    low = text.lower()
    if low in CANONICAL or low in EXTRA:
        return low
    return SYNONYMS.get(low)


def _load(root: Path) -> Any:
    try:
        import audformat
    except ImportError as exc:
        raise ValueError("audformat: the adapter needs the audformat package: pip install 'serray[audformat]'") from exc
    require_dir(root, ADAPTER, _FIX)
    base = find_layout_dir(root, lambda d: (d / "db.yaml").is_file(), ADAPTER, "no db.yaml found", _FIX)
    try:
        return audformat.Database.load(str(base), load_data=True)
    except Exception as exc:  # noqa: BLE001 - audformat raises many kinds; one line names the database
        raise layout_error(NAME, base, f"audformat could not load the database ({type(exc).__name__}: {exc})",
                           LAYOUT, "check db.yaml and its table files") from exc


def _find_column(db: Any, table_ids: list[str], option: str, name: str | None, default: str) -> list[tuple[str, str]]:
    """``(table, column)`` pairs of the column ``name`` (default: ``default`` by id or scheme) in ``table_ids``."""
    found = []
    for tid in table_ids:
        cols = db[tid].columns
        if name is not None:
            found += [(tid, name)] if name in cols else []
            continue
        hit = default if default in cols else next((c for c, col in cols.items() if col.scheme_id == default), None)
        found += [(tid, hit)] if hit else []
    if not found:
        where = f"table(s) {table_ids}" if len(table_ids) < 6 else f"{len(table_ids)} filewise tables"
        raise layout_error(NAME, db.root, f"no {name or default!r} column in {where}", LAYOUT,
                           f"name the column with -o {option}=COLUMN")
    return found


def _filewise_tables(db: Any, table: str | None) -> list[str]:
    """Ids of the tables to read labels from (checked to exist and be filewise)."""
    if table is not None:
        if table not in db.tables:
            raise layout_error(NAME, db.root, f"no table {table!r} (tables: {sorted(db.tables)})", LAYOUT,
                               "pass one of them with -o table=NAME")
        if db[table].type != "filewise":
            raise layout_error(NAME, db.root, f"table {table!r} is segmented (start/end per row); serray labels whole "
                               "files", LAYOUT, "pass a filewise table with -o table=NAME")
        return [table]
    return sorted(t for t in db.tables if db[t].type == "filewise")


def _per_file(db: Any, pairs: list[tuple[str, str]], what: str) -> pd.Series:
    """One value per file from ``(table, column)`` pairs; a file with two different values is an error."""
    parts = [db[t][c].get().dropna().rename(what) for t, c in pairs]
    values = pd.concat(parts) if parts else pd.Series(dtype=object, name=what)
    values = values.astype(str)
    dup = values.groupby(level=0).nunique()
    clash = dup[dup > 1]
    if len(clash):
        raise layout_error(NAME, db.root, f"{len(clash)} file(s) have different {what} values in {pairs}, e.g. "
                           f"{clash.index[0]!r}", LAYOUT, "pick one table with -o table=NAME")
    return values[~values.index.duplicated()]


def _speaker_genders(db: Any, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Speaker id -> ``f``/``m`` from the speaker scheme's labels (a mapping or a misc table)."""
    table, column = pairs[0]
    scheme_id = db[table].columns[column].scheme_id
    labels = db.schemes[scheme_id].labels if scheme_id in db.schemes else None
    if isinstance(labels, str) and labels in db.misc_tables:
        frame = db[labels].get()
        info = frame["gender"].to_dict() if "gender" in frame.columns else {}
    elif isinstance(labels, dict):
        info = {k: v.get("gender") for k, v in labels.items() if isinstance(v, dict)}
    else:
        info = {}
    return {str(k): _GENDER[str(v).strip().lower()] for k, v in info.items()
            if isinstance(v, str) and str(v).strip().lower() in _GENDER}


def _file_genders(db: Any, spk_pairs: list[tuple[str, str]], speakers: pd.Series) -> dict[str, str | None]:
    """File -> ``f``/``m``/``None``: from the speaker scheme's labels, else from a ``gender`` column."""
    genders = _speaker_genders(db, spk_pairs)
    if genders:
        return {f: genders.get(s) for f, s in speakers.items()}
    tables = _filewise_tables(db, None)
    pairs = [(t, "gender") for t in tables if "gender" in db[t].columns]
    if not pairs:
        return {}
    return {f: _GENDER.get(g.strip().lower()) for f, g in _per_file(db, pairs, "gender").items()}


def _splits(db: Any) -> dict[str, str]:
    """File -> ``split`` value from every filewise table that has a split (train/development/test id)."""
    out: dict[str, str] = {}
    for tid in sorted(db.tables):
        t = db[tid]
        if t.type != "filewise" or not t.split_id or t.split_id not in db.splits:
            continue
        kind = str(db.splits[t.split_id].type).lower()
        value = _SPLIT_TYPES.get(kind) or (t.split_id.lower() if kind == "test" else None)
        if value is None:
            continue
        for f in t.files:
            if out.setdefault(f, value) != value:
                log.warning("audformat: %s is in the splits %s and %s; keeping %s", f, out[f], value, out[f])
    return out


def _language(db: Any, language: str | None) -> str | None:
    if language is not None:
        return language
    langs = list(getattr(db, "languages", None) or [])
    if len(langs) == 1:
        code = str(langs[0]).lower()
        return code if len(code) == 2 else _ISO639_3.get(code)
    return None


def _labels(emotions: pd.Series, mapping: dict[str, str | None] | None, root: Any) -> pd.Series:
    """Canonical labels per file (files whose label is mapped to nothing dropped)."""
    native = sorted(set(emotions))
    canon = {n: canonical_label(n, mapping) for n in native}
    unknown = [n for n in native if canon[n] is None and not (mapping and n in mapping)]
    if unknown:
        raise layout_error(NAME, root, f"emotion labels {unknown} are not canonical ({', '.join(CANONICAL)}) nor known "
                           "synonyms", LAYOUT, "map them with -o label_map=LABEL:canonical,... (an empty target drops a label)")
    bad = sorted({v for v in canon.values() if v is not None} - set(CANONICAL) - set(EXTRA))
    if bad:
        raise ValueError(f"audformat: label_map targets {bad} are not canonical; use names from {list(CANONICAL + EXTRA)}")
    out = emotions.map(canon)
    if out.isna().any():
        log.info("audformat: %d file(s) dropped by label_map: %s", int(out.isna().sum()),
                 emotions[out.isna()].value_counts().to_dict())
    return out.dropna()


def _utt_id(corpus: str, file: str) -> str:
    p = Path(file)
    rel = p.relative_to(p.anchor) if p.is_absolute() else p
    return f"{corpus}/{nfc(rel.with_suffix('').as_posix())}"


def scan(root: Path, corpus_name: str | None = None, table: str | None = None, emotion_column: str | None = None,
         speaker_column: str | None = None, label_map: Any = None, language: str | None = None,
         naturalness: str | None = None) -> Scan:
    """Read an audformat database into manifest rows (see the module docstring)."""
    if naturalness is not None and naturalness not in ("acted", "natural"):
        raise ValueError(f"option naturalness={naturalness!r} must be one of ('acted', 'natural')")
    mapping = opt_mapping("label_map", label_map)
    db = _load(Path(root))
    corpus = corpus_name or (db.name if db.name and db.name != "db" else NAME)
    tables = _filewise_tables(db, table)
    emo_pairs = _find_column(db, tables, "emotion_column", emotion_column, "emotion")
    native = _per_file(db, emo_pairs, "emotion")
    emotions = _labels(native, mapping, db.root)
    spk_pairs = _find_column(db, _filewise_tables(db, None), "speaker_column", speaker_column, "speaker")
    speakers = _per_file(db, spk_pairs, "speaker")
    file_gender = _file_genders(db, spk_pairs, speakers)
    splits, lang = _splits(db), _language(db, language)
    records, skipped = [], []
    for file, emotion in emotions.items():
        path = Path(file) if os.path.isabs(file) else Path(db.root) / file
        if file not in speakers.index:
            skipped.append((path, f"no speaker for this file in the audformat database ({spk_pairs[0][1]!r} column)"))
            continue
        records.append({"utt_id": _utt_id(corpus, file), "path": os.path.abspath(path), "corpus": corpus,
                        "speaker": f"{corpus}_{speakers[file]}", "emotion": emotion, "gender": file_gender.get(file),
                        "emotion_native": native[file], "split": splits.get(file), "language": lang,
                        "naturalness": naturalness})
    if not records:
        raise layout_error(NAME, db.root, "no file with both an emotion label and a speaker", LAYOUT, _FIX)
    rows = pd.DataFrame(records).dropna(axis=1, how="all")
    log.info("audformat: %s: %d labelled file(s) from table(s) %s", corpus, len(rows), sorted({t for t, _ in emo_pairs}))
    return Scan(rows=order_columns(rows.sort_values("utt_id", kind="stable")), skipped=skipped_frame(skipped))


ADAPTER = Adapter(name=NAME, title="audformat database (audb)", layout=LAYOUT, scan=scan,
                  options=("table", "emotion_column", "speaker_column", "label_map", "language", "naturalness"))
