"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song), English, acted.

Layout ``Actor_NN/MM-CC-EE-II-SS-RR-AA.wav``, e.g. ``Actor_01/03-01-05-02-01-01-01.wav``:
modality (03 audio-only), vocal channel (01 speech, 02 song), emotion (01 neutral, 02
calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01
normal, 02 strong), statement (01 "Kids are talking by the door", 02 "Dogs are sitting by
the door"), repetition, actor (odd male, even female). Only audio-only speech files are
kept; the others (song, video) are counted in the log. ``root`` is the folder holding
``Actor_01 ... Actor_24`` or a folder above it (e.g. the one holding
``Audio_Speech_Actors_01-24``).

Extra columns: ``emotion_native`` (the code), ``intensity``, ``text_id``, ``text``,
``repetition``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from serray.corpora.base import (
    Adapter,
    Scan,
    build_rows,
    check_duplicates,
    layout_error,
    list_audio,
    require_dir,
    skipped_frame,
)

__all__ = ["ADAPTER", "EMOTIONS", "scan"]

log = logging.getLogger(__name__)

NAME = "ravdess"
LAYOUT = (
    "folders Actor_01 ... Actor_24 holding modality-channel-emotion-intensity-statement-repetition-actor.wav, "
    "e.g. Audio_Speech_Actors_01-24/Actor_01/03-01-05-02-01-01-01.wav"
)
_FIX = "pass the folder that contains Actor_01 ... Actor_24 (or its parent)"

#: RAVDESS emotion code -> canonical label.
EMOTIONS: dict[str, str] = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
}
_INTENSITY = {"01": "normal", "02": "strong"}
_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_ACTOR_DIR = re.compile(r"^Actor_\d\d$", re.IGNORECASE)
_FILE = re.compile(r"^(?P<mod>\d\d)-(?P<chan>\d\d)-(?P<emo>\d\d)-(?P<int>\d\d)-(?P<stmt>\d\d)-(?P<rep>\d\d)-(?P<actor>\d\d)$")


def _actor_dirs(d: Path) -> list[Path]:
    return sorted(c for c in d.iterdir() if c.is_dir() and _ACTOR_DIR.match(c.name))


def _candidates(root: Path) -> list[Path]:
    """Folders holding ``Actor_*``: the root itself, else its children, else grandchildren."""
    if _actor_dirs(root):
        return [root]
    level = [root]
    for _ in range(2):
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        found = [d for d in level if _actor_dirs(d)]
        if found:
            return found
    return []


def scan(root: Path, corpus_name: str | None = None) -> Scan:
    """Scan a RAVDESS folder (see the module docstring)."""
    corpus = corpus_name or NAME
    require_dir(root, ADAPTER, _FIX)
    bases = _candidates(root)
    if not bases:
        raise layout_error(NAME, root, "no Actor_NN folders found", LAYOUT, _FIX)
    records, skipped, seen = [], [], {}
    n_other = 0
    for base in bases:
        for actor_dir in _actor_dirs(base):
            for p in list_audio(actor_dir, recursive=False):
                m = _FILE.match(p.stem)
                if not m or m["emo"] not in EMOTIONS or m["int"] not in _INTENSITY:
                    skipped.append((p, "file name does not follow the RAVDESS scheme "
                                       "MM-CC-EE-II-SS-RR-AA.wav (e.g. 03-01-05-02-01-01-01.wav)"))
                    continue
                if m["mod"] != "03" or m["chan"] != "01":
                    n_other += 1
                    continue
                seen.setdefault(p.name, []).append(p)
                actor = int(m["actor"])
                records.append({
                    "path": p, "base": base, "speaker": m["actor"], "emotion": EMOTIONS[m["emo"]],
                    "gender": "m" if actor % 2 else "f", "emotion_native": m["emo"],
                    "intensity": _INTENSITY[m["int"]], "text_id": m["stmt"], "text": _STATEMENTS.get(m["stmt"]),
                    "repetition": int(m["rep"]),
                })
    if n_other:
        log.info("ravdess: %d song or video file(s) skipped (only audio-only speech, 03-01-*, is used)", n_other)
    check_duplicates(NAME, seen, LAYOUT)
    if not records:
        raise layout_error(NAME, root, "no audio-only speech files (03-01-*.wav) in the Actor folders", LAYOUT, _FIX)
    # utt_id relative to the folder holding Actor_*: the same ids whichever root was passed.
    parts = [build_rows([r for r in records if r["base"] == b], corpus, b, language="en", naturalness="acted") for b in bases]
    rows = parts[0] if len(parts) == 1 else _concat_sorted(parts)
    return Scan(rows=rows.drop(columns="base"), skipped=skipped_frame(skipped))


def _concat_sorted(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([p for p in parts if len(p)], ignore_index=True).sort_values("utt_id", kind="stable").reset_index(drop=True)


ADAPTER = Adapter(name=NAME, title="RAVDESS (speech, audio-only)", layout=LAYOUT, scan=scan)
