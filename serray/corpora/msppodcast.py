"""MSP-Podcast (UT Dallas), English, natural speech from podcast recordings.

Official layout: the audio in ``Audios/<FileName>`` (e.g.
``Audios/MSP-PODCAST_0001_0008.wav``) and the consensus labels in
``Labels/labels_consensus.csv`` (releases before 1.9 spell it ``labels_concensus.csv``;
both are read), one row per utterance with the columns ``FileName``, ``EmoClass``,
``EmoAct``, ``EmoVal``, ``EmoDom``, ``SpkrID``, ``Gender`` and ``Split_Set``. ``root`` is
the folder holding ``Audios`` and ``Labels`` (or a folder up to two levels above it).

``EmoClass`` (the consensus category) maps to serray's names: ``A`` angry, ``S`` sad,
``H`` happy, ``U`` surprise, ``F`` fear, ``D`` disgust, ``C`` contempt, ``N`` neutral,
``O`` other. ``X`` (no agreement among the evaluators) is dropped and counted in the log
unless ``keep_unagreed`` keeps it as ``other`` (``emotion_native`` ``X``), for work on
the dimensional labels. A label set such as ``4class`` keeps neutral/happy/sad/angry.

Speakers: ``SpkrID`` is the speaker; a missing or ``Unknown`` id is not one shared fake
speaker: ``speaker_id`` stays empty (missing) and ``speaker`` (which the manifest
requires) is a pseudo-speaker per podcast episode, ``unknown-<episode>`` with the episode
read from the file name (``MSP-PODCAST_0001_0008`` -> ``unknown-0001``; the whole name
when it has no ``_<number>`` suffix). Utterances of one episode, where an unknown voice
most likely speaks again, thus stay on one side of a speaker-independent split;
``speaker_known`` says which rows have a real id.

Extra columns: ``emotion_native`` (the code), ``speaker_id``, ``speaker_known``,
``arousal``, ``valence``, ``dominance`` (``EmoAct``, ``EmoVal``, ``EmoDom``: the
evaluators' means on the corpus's 1-7 scales), ``split`` (the official partition:
``train``, ``development``, ``test1``, ``test2``, ``test3``, lower-cased ``Split_Set``;
empty where the CSV has none; ``--protocol split`` trains on ``train``, validates on
``development`` and tests on each test partition as its own fold, see
:func:`serray.protocols.make_folds`), ``gender`` (f/m; ``Unknown`` is missing),
``naturalness`` ``natural`` and ``language`` ``en``.

Options:
    labels: Keep only these labels (canonical names, list or comma-separated).
    keep_unagreed: Keep ``X`` (no agreement) as ``other`` (default false).
    splits: Keep only these official partitions (e.g. ``train,development,test1``).

Example:
    >>> episode("MSP-PODCAST_0001_0008"), episode("odd-name")
    ('0001', 'odd-name')
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from serray.corpora.base import (
    Adapter,
    Scan,
    build_rows,
    find_layout_dir,
    layout_error,
    list_audio,
    opt_bool,
    opt_list,
    require_dir,
    skipped_frame,
)
from serray.labels import CANONICAL, EXTRA

__all__ = ["ADAPTER", "EMOTIONS", "SPLITS", "episode", "read_labels", "scan"]

log = logging.getLogger(__name__)

NAME = "msppodcast"
LAYOUT = ("Audios/<FileName> and Labels/labels_consensus.csv (FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, "
          "Gender, Split_Set), e.g. MSP-Podcast/Audios/MSP-PODCAST_0001_0008.wav")
_FIX = "pass the folder that contains Audios and Labels (e.g. MSP-Podcast)"
_LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")
_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")

#: MSP-Podcast ``EmoClass`` code -> canonical label (``X``, no agreement, is dropped).
EMOTIONS: dict[str, str] = {
    "A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust", "C": "contempt",
    "N": "neutral", "O": "other",
}
#: The official partitions (``split`` column values).
SPLITS: tuple[str, ...] = ("train", "development", "test1", "test2", "test3")
_GENDER = {"female": "f", "f": "f", "male": "m", "m": "m"}
_EPISODE = re.compile(r"^.*_(\d+)_\d+$")


def episode(stem: str) -> str:
    """The podcast episode of an utterance's file name (``MSP-PODCAST_0001_0008`` -> ``0001``)."""
    m = _EPISODE.match(stem)
    return m[1] if m else stem


def _labels_file(d: Path) -> Path | None:
    return next((d / "Labels" / f for f in _LABEL_FILES if (d / "Labels" / f).is_file()), None)


def read_labels(path: Path) -> pd.DataFrame:
    """The consensus label table, checked for the columns it needs.

    Raises:
        CorpusLayoutError: A required column is missing (the message names the file).
    """
    df = pd.read_csv(path, dtype={"FileName": str, "EmoClass": str, "SpkrID": str, "Gender": str, "Split_Set": str})
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise layout_error(NAME, path, f"label table lacks column(s) {missing} (has {list(df.columns)})", LAYOUT,
                           "use the labels_consensus.csv of an MSP-Podcast release")
    return df


def _speaker(raw: Any, stem: str) -> tuple[str, str | None]:
    """``(speaker, speaker_id)``: the id, or a per-episode pseudo-speaker and ``None`` when unknown."""
    text = "" if pd.isna(raw) else str(raw).strip()
    if text and text.lower() not in {"unknown", "nan", "none"}:
        return text, text
    return f"unknown-{episode(stem)}", None


def _options(labels: Any, splits: Any) -> tuple[list[str] | None, list[str] | None]:
    keep_labels, keep_splits = opt_list("labels", labels), opt_list("splits", splits)
    if keep_labels is not None:
        bad = sorted(set(keep_labels) - set(CANONICAL) - set(EXTRA))
        if bad:
            raise ValueError(f"msppodcast: labels {bad} are not canonical names; use names from {list(CANONICAL + EXTRA)}")
    if keep_splits is not None:
        keep_splits = [s.lower() for s in keep_splits]
        bad = sorted(set(keep_splits) - set(SPLITS))
        if bad:
            raise ValueError(f"msppodcast: splits {bad} are not official partitions; use names from {list(SPLITS)}")
    return keep_labels, keep_splits


def _record(row: pd.Series, path: Path, emotion: str) -> dict[str, Any]:
    stem = Path(str(row["FileName"])).stem
    speaker, speaker_id = _speaker(row["SpkrID"], stem)
    split = "" if pd.isna(row["Split_Set"]) else str(row["Split_Set"]).strip().lower()
    gender = "" if pd.isna(row["Gender"]) else str(row["Gender"]).strip().lower()
    return {
        "path": path, "speaker": speaker, "emotion": emotion, "gender": _GENDER.get(gender),
        "emotion_native": str(row["EmoClass"]).strip().upper(), "speaker_id": speaker_id,
        "speaker_known": speaker_id is not None, "arousal": float(row["EmoAct"]), "valence": float(row["EmoVal"]),
        "dominance": float(row["EmoDom"]), "split": split or None,
    }


def scan(root: Path, corpus_name: str | None = None, labels: Any = None, keep_unagreed: Any = False,
         splits: Any = None) -> Scan:
    """Scan an MSP-Podcast release (see the module docstring for layout and options)."""
    corpus = corpus_name or NAME
    keep_unagreed = opt_bool("keep_unagreed", keep_unagreed)
    keep_labels, keep_splits = _options(labels, splits)
    require_dir(root, ADAPTER, _FIX)
    base = find_layout_dir(root, lambda d: (d / "Audios").is_dir() and _labels_file(d) is not None, ADAPTER,
                           "no Audios folder next to Labels/labels_consensus.csv found", _FIX)
    table = read_labels(_labels_file(base))
    wavs = {p.name: p for p in list_audio(base / "Audios")}
    records: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    counts = {"X": 0, "unknown": 0, "no_wav": 0, "labels": 0, "splits": 0}
    missing_example = ""
    for _, row in table.iterrows():
        name, code = str(row["FileName"]).strip(), str(row["EmoClass"]).strip().upper()
        if name not in wavs:
            counts["no_wav"] += 1
            missing_example = missing_example or name
            continue
        if code == "X" and not keep_unagreed:
            counts["X"] += 1
            continue
        if code not in EMOTIONS and code != "X":
            counts["unknown"] += 1
            skipped.append((wavs[name], f"unknown MSP-Podcast EmoClass {code!r} in the label table"))
            continue
        rec = _record(row, wavs[name], EMOTIONS.get(code, "other"))
        if keep_labels is not None and rec["emotion"] not in keep_labels:
            counts["labels"] += 1
        elif keep_splits is not None and rec["split"] not in keep_splits:
            counts["splits"] += 1
        else:
            records.append(rec)
    labelled = set(table["FileName"].astype(str).str.strip())
    skipped += [(p, "no row for this file in the label table") for n, p in sorted(wavs.items()) if n not in labelled]
    _log_counts(counts, keep_labels, keep_splits, missing_example)
    if not records:
        raise layout_error(NAME, base, "no labelled utterance with an audio file (after the filters)", LAYOUT, _FIX)
    rows = build_rows(records, corpus, base / "Audios", language="en", naturalness="natural")
    rows["speaker_known"] = rows["speaker_known"].astype(bool)
    return Scan(rows=rows, skipped=skipped_frame(skipped))


def _log_counts(counts: dict[str, int], keep_labels: Any, keep_splits: Any, missing_example: str) -> None:
    if counts["X"]:
        log.info("msppodcast: %d utterance(s) labelled X (no evaluator agreement) dropped", counts["X"])
    if counts["labels"]:
        log.info("msppodcast: %d utterance(s) with labels outside %s dropped", counts["labels"], keep_labels)
    if counts["splits"]:
        log.info("msppodcast: %d utterance(s) outside the partitions %s dropped", counts["splits"], keep_splits)
    if counts["unknown"]:
        log.warning("msppodcast: %d utterance(s) with unknown EmoClass codes left out", counts["unknown"])
    if counts["no_wav"]:
        log.warning("msppodcast: %d labelled utterance(s) have no audio file, e.g. %s", counts["no_wav"], missing_example)


ADAPTER = Adapter(name=NAME, title="MSP-Podcast", layout=LAYOUT, scan=scan, options=("labels", "keep_unagreed", "splits"))
