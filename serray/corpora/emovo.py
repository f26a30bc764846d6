"""EMOVO (Italian emotional speech), acted.

Layout ``<spk>/<emo>-<spk>-<sentence>.wav``, e.g. ``f1/dis-f1-b1.wav``; speakers ``f1 f2
f3`` (female) and ``m1 m2 m3`` (male); emotion codes ``dis`` disgust, ``gio`` joy, ``neu``
neutral, ``pau`` fear, ``rab`` anger, ``sor`` surprise, ``tri`` sadness; sentences
``b1-b3 d1-d2 l1-l4 n1-n5``. ``root`` is the folder holding the speaker folders (or a
folder up to two levels above it, e.g. where the archive was unpacked).

Extra columns: ``emotion_native`` (the code), ``text_id`` (the sentence code).
"""

from __future__ import annotations

import re
from pathlib import Path

from serray.corpora.base import Adapter, Scan, build_rows, find_layout_dir, layout_error, list_audio, require_dir, skipped_frame

__all__ = ["ADAPTER", "EMOTIONS", "scan"]

NAME = "emovo"
LAYOUT = "speaker folders f1 f2 f3 m1 m2 m3 holding <emo>-<spk>-<sentence>.wav, e.g. emovo/f1/dis-f1-b1.wav"
_FIX = "pass the folder that contains f1 ... m3"

#: EMOVO emotion code -> canonical label.
EMOTIONS: dict[str, str] = {
    "dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fear", "rab": "angry", "sor": "surprise", "tri": "sad",
}

_SPK_DIR = re.compile(r"^[fm]\d$", re.IGNORECASE)
_FILE = re.compile(r"^(?P<emo>[a-z]{3})-(?P<spk>[fm]\d)-(?P<sent>[a-z]\d)$", re.IGNORECASE)


def _has_speakers(d: Path) -> bool:
    return any(c.is_dir() and _SPK_DIR.match(c.name) for c in d.iterdir())


def scan(root: Path, corpus_name: str | None = None) -> Scan:
    """Scan an EMOVO folder (see the module docstring)."""
    corpus = corpus_name or NAME
    require_dir(root, ADAPTER, _FIX)
    base = find_layout_dir(root, _has_speakers, ADAPTER, "no speaker folders (f1 ... m3) found", _FIX)
    records, skipped = [], []
    for spk_dir in sorted(c for c in base.iterdir() if c.is_dir() and _SPK_DIR.match(c.name)):
        for p in list_audio(spk_dir, recursive=False):
            m = _FILE.match(p.stem)
            emo = m["emo"].lower() if m else None
            if not m or emo not in EMOTIONS:
                skipped.append((p, "file name does not follow the EMOVO scheme <emo>-<spk>-<sentence>.wav "
                                   f"with emo in {sorted(EMOTIONS)} (e.g. dis-f1-b1.wav)"))
                continue
            spk = m["spk"].lower()
            records.append({
                "path": p, "speaker": spk, "emotion": EMOTIONS[emo], "gender": spk[0],
                "emotion_native": emo, "text_id": m["sent"].lower(),
            })
    if not records:
        raise layout_error(NAME, base, "no EMOVO audio files in the speaker folders", LAYOUT, _FIX)
    rows = build_rows(records, corpus, base, language="it", naturalness="acted")
    return Scan(rows=rows, skipped=skipped_frame(skipped))


ADAPTER = Adapter(name=NAME, title="EMOVO (Italian emotional speech)", layout=LAYOUT, scan=scan)
