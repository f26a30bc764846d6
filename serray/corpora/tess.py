"""TESS (Toronto Emotional Speech Set), English, acted; two female speakers.

Layout ``<SPK>_<emotion>/<SPK>_<word>_<emotion>.wav``, e.g. ``OAF_angry/OAF_back_angry.wav``
or ``YAF_pleasant_surprised/YAF_back_ps.wav``: speakers ``OAF`` (older, 64) and ``YAF``
(younger, 26), both female; emotions angry, disgust, fear, happy, neutral, pleasant
surprise (``ps``), sad. The label is read from the file name (the folder name is the
fallback). ``root`` is the folder holding the ``OAF_*``/``YAF_*`` folders, or a folder up
to two levels above it (e.g. ``TESS Toronto emotional speech set data/``).

Extra columns: ``emotion_native`` (as written in the file name), ``word``, ``text``
("Say the word <word>"), ``age``.
"""

from __future__ import annotations

import re
from pathlib import Path

from serray.corpora.base import Adapter, Scan, build_rows, check_duplicates, find_layout_dir, layout_error, list_audio, require_dir, skipped_frame

__all__ = ["ADAPTER", "EMOTIONS", "scan"]

NAME = "tess"
LAYOUT = (
    "folders OAF_<emotion> and YAF_<emotion> holding <SPK>_<word>_<emotion>.wav, "
    "e.g. TESS/OAF_angry/OAF_back_angry.wav"
)
_FIX = "pass the folder that contains OAF_angry ... YAF_sad"

#: TESS emotion name (lower case) -> canonical label.
EMOTIONS: dict[str, str] = {
    "angry": "angry", "anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
    "neutral": "neutral", "sad": "sad", "ps": "surprise", "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise", "surprise": "surprise", "surprised": "surprise",
}
_SPEAKERS = {"OAF": 64, "YAF": 26}
_SPK_DIR = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)


def _spk_dirs(d: Path) -> list[Path]:
    return sorted(c for c in d.iterdir() if c.is_dir() and _SPK_DIR.match(c.name))


def scan(root: Path, corpus_name: str | None = None) -> Scan:
    """Scan a TESS folder (see the module docstring)."""
    corpus = corpus_name or NAME
    require_dir(root, ADAPTER, _FIX)
    base = find_layout_dir(root, lambda d: bool(_spk_dirs(d)), ADAPTER, "no OAF_*/YAF_* folders found", _FIX)
    records, skipped, seen = [], [], {}
    for folder in _spk_dirs(base):
        folder_emo = _SPK_DIR.match(folder.name)[2].lower()
        for p in list_audio(folder):
            parts = p.stem.split("_")
            spk = parts[0].upper()
            emo_native = "_".join(parts[2:]).lower() if len(parts) >= 3 else ""
            emotion = EMOTIONS.get(emo_native) or EMOTIONS.get(folder_emo)
            if spk not in _SPEAKERS or len(parts) < 3 or emotion is None:
                skipped.append((p, "file name does not follow the TESS scheme <SPK>_<word>_<emotion>.wav "
                                   "with SPK OAF or YAF (e.g. OAF_back_angry.wav)"))
                continue
            seen.setdefault(p.stem.lower(), []).append(p)
            records.append({
                "path": p, "speaker": spk, "emotion": emotion, "gender": "f",
                "emotion_native": emo_native, "word": parts[1].lower(), "text": f"Say the word {parts[1].lower()}",
                "age": _SPEAKERS[spk],
            })
    check_duplicates(NAME, seen, LAYOUT)
    if not records:
        raise layout_error(NAME, base, "no TESS audio files in the OAF_*/YAF_* folders", LAYOUT, _FIX)
    rows = build_rows(records, corpus, base, language="en", naturalness="acted")
    return Scan(rows=rows, skipped=skipped_frame(skipped))


ADAPTER = Adapter(name=NAME, title="TESS (Toronto Emotional Speech Set)", layout=LAYOUT, scan=scan)
