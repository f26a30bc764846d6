"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset), English, acted.

Layout ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav``, e.g.
``AudioWAV/1001_DFA_ANG_XX.wav``: emotion ``ANG DIS FEA HAP NEU SAD``, level ``LO MD HI``
(low, medium, high) or ``XX`` (unspecified). Genders come from ``VideoDemographics.csv``
(columns ``ActorID, Age, Sex, Race, Ethnicity``; Sex ``Male``/``Female``), looked up in the
root and its parent unless the ``demographics`` option names the file. ``root`` is the
CREMA-D folder (holding ``AudioWAV/``) or ``AudioWAV/`` itself.

Extra columns: ``emotion_native``, ``intensity``, ``text_id``, ``text``, ``age``, ``race``,
``ethnicity``.

Options:
    demographics: Path of ``VideoDemographics.csv`` when it is not next to the audio.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from serray.corpora.base import Adapter, Scan, build_rows, layout_error, list_audio, require_dir, skipped_frame

__all__ = ["ADAPTER", "EMOTIONS", "read_demographics", "scan"]

log = logging.getLogger(__name__)

NAME = "cremad"
LAYOUT = (
    "AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav plus VideoDemographics.csv, "
    "e.g. CREMA-D/AudioWAV/1001_DFA_ANG_XX.wav and CREMA-D/VideoDemographics.csv"
)
_FIX = "pass the CREMA-D folder that contains AudioWAV/ and VideoDemographics.csv"

#: CREMA-D emotion code -> canonical label.
EMOTIONS: dict[str, str] = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before", "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
_FILE = re.compile(r"^(?P<actor>\d{4})_(?P<sent>[A-Z]{3})_(?P<emo>[A-Z]{3})_(?P<level>[A-Z]{2})$")
_DEMOGRAPHICS = "VideoDemographics.csv"
_SEX = {"male": "m", "female": "f"}


def read_demographics(path: str | Path) -> pd.DataFrame:
    """Read ``VideoDemographics.csv`` indexed by the 4-digit actor id, with ``gender`` (f/m),
    ``age``, ``race``, ``ethnicity``.

    Raises:
        CorpusLayoutError: Missing columns or Sex values other than Male/Female.
    """
    df = pd.read_csv(path, dtype=str)
    df.columns = [c.strip() for c in df.columns]
    need = ["ActorID", "Age", "Sex", "Race", "Ethnicity"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise layout_error(NAME, path, f"missing column(s) {missing} (found {list(df.columns)})", LAYOUT,
                           "use the VideoDemographics.csv shipped with CREMA-D")
    gender = df["Sex"].str.strip().str.lower().map(_SEX)
    if gender.isna().any():
        bad = sorted(df.loc[gender.isna(), "Sex"].astype(str).unique())
        raise layout_error(NAME, path, f"Sex values {bad} are not Male/Female", LAYOUT, "fix those rows")
    return pd.DataFrame({
        "gender": gender.to_numpy(),
        "age": pd.to_numeric(df["Age"], errors="coerce").to_numpy(),
        "race": df["Race"].str.strip().to_numpy(),
        "ethnicity": df["Ethnicity"].str.strip().to_numpy(),
    }, index=df["ActorID"].str.strip().str.zfill(4))


def scan(root: Path, corpus_name: str | None = None, demographics: Any = None) -> Scan:
    """Scan a CREMA-D folder (see the module docstring)."""
    corpus = corpus_name or NAME
    require_dir(root, ADAPTER, _FIX)
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    files = list_audio(audio_dir, recursive=False)
    if not any(_FILE.match(p.stem) for p in files):
        raise layout_error(NAME, audio_dir, f"no CREMA-D file names among {len(files)} .wav file(s)", LAYOUT, _FIX)
    if demographics is not None:
        demo_file = Path(demographics)
        if not demo_file.is_file():
            raise layout_error(NAME, demo_file, "no such demographics file", LAYOUT, "pass the path of VideoDemographics.csv")
    else:
        places = [root / _DEMOGRAPHICS, audio_dir / _DEMOGRAPHICS, audio_dir.parent / _DEMOGRAPHICS, root.parent / _DEMOGRAPHICS]
        demo_file = next((p for p in places if p.is_file()), None)
        if demo_file is None:
            raise layout_error(
                NAME, root, f"{_DEMOGRAPHICS} (needed for the speakers' genders) not found in {sorted({str(p.parent) for p in places})}",
                LAYOUT, f"put {_DEMOGRAPHICS} next to AudioWAV/ or pass demographics=PATH",
            )
    demo = read_demographics(demo_file)
    records, skipped = [], []
    for p in files:
        m = _FILE.match(p.stem)
        if not m or m["emo"] not in EMOTIONS or m["level"] not in _LEVELS:
            skipped.append((p, "file name does not follow the CREMA-D scheme <actor>_<sentence>_<emotion>_<level>.wav "
                               f"with emotion in {sorted(EMOTIONS)} (e.g. 1001_DFA_ANG_XX.wav)"))
            continue
        if m["actor"] not in demo.index:
            skipped.append((p, f"actor {m['actor']} not in {demo_file}"))
            continue
        d = demo.loc[m["actor"]]
        records.append({
            "path": p, "speaker": m["actor"], "emotion": EMOTIONS[m["emo"]], "gender": d["gender"],
            "emotion_native": m["emo"], "intensity": _LEVELS[m["level"]], "text_id": m["sent"],
            "text": _SENTENCES.get(m["sent"]), "age": d["age"], "race": d["race"], "ethnicity": d["ethnicity"],
        })
    rows = build_rows(records, corpus, audio_dir, language="en", naturalness="acted")
    return Scan(rows=rows, skipped=skipped_frame(skipped))


ADAPTER = Adapter(name=NAME, title="CREMA-D", layout=LAYOUT, scan=scan, options=("demographics",))
