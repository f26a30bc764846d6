"""CaFE (Canadian French Emotional speech dataset), French, acted.

Layout ``<Emotion>/<Intensity>/AA-E-I-S.wav``, e.g. ``Colère/Faible/01-C-1-1.wav``; the
neutral folder has no intensity level: ``Neutre/01-N-1.wav`` (``01-N-0-1.wav`` style
names are accepted too). Fields: actor ``AA`` (01-12), emotion ``E`` (``C`` colère/anger,
``D`` dégoût/disgust, ``J`` joie/happiness, ``N`` neutre, ``P`` peur/fear, ``S`` surprise,
``T`` tristesse/sadness), intensity ``I`` (1 faible/low, 2 fort/high), sentence ``S``
(1-6). Labels come from the file name only, so accents in the folder names (and their
Unicode form) do not matter. ``root`` is searched recursively; ``.wav``, ``.aiff``/``.aif``
(the 192 kHz release) and ``.flac`` files are read.

Gender: the CaFE readme states "Odd: Man, Even: Woman" and lists actors 01-12 with ages
(six men, six women); this adapter follows it (odd actor number -> m, even -> f).

Extra columns: ``emotion_native`` (the letter), ``intensity`` (low/high; empty for
neutral), ``text_id``, ``text``, ``age``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from serray.corpora.base import Adapter, Scan, build_rows, check_duplicates, layout_error, list_audio, require_dir, skipped_frame

__all__ = ["ADAPTER", "EMOTIONS", "scan"]

NAME = "cafe"
LAYOUT = (
    "<Emotion>/<Faible|Fort>/AA-E-I-S.wav and Neutre/AA-N-S.wav (actor-emotion-intensity-sentence), "
    "e.g. CaFE_48k/Colère/Faible/01-C-1-1.wav"
)
_FIX = "pass the CaFE folder that contains Colère, Dégoût, Joie, Neutre, Peur, Surprise, Tristesse"
_EXTENSIONS = (".wav", ".aiff", ".aif", ".flac")

#: CaFE emotion letter -> canonical label.
EMOTIONS: dict[str, str] = {
    "C": "angry", "D": "disgust", "J": "happy", "N": "neutral", "P": "fear", "S": "surprise", "T": "sad",
}
_INTENSITY = {"1": "low", "2": "high"}
#: actor -> age (readme); odd actors are men, even actors women.
_AGES = {"01": 46, "02": 64, "03": 18, "04": 50, "05": 22, "06": 34, "07": 15, "08": 25, "09": 42, "10": 20, "11": 35, "12": 37}
_SENTENCES = {
    "1": "Un cheval fou dans mon jardin",
    "2": "Deux ânes aigris au pelage brun",
    "3": "Trois cygnes aveugles au bord du lac",
    "4": "Quatre vieilles truies éléphantesques",
    "5": "Cinq pumas fiers et passionnés",
    "6": "Six ours aimants domestiqués",
}
_FILE = re.compile(r"^(?P<actor>\d\d)-(?P<emo>[CDJNPST])-(?:(?P<int>\d)-)?(?P<sent>\d)$", re.IGNORECASE)


def scan(root: Path, corpus_name: str | None = None) -> Scan:
    """Scan a CaFE folder (see the module docstring)."""
    corpus = corpus_name or NAME
    require_dir(root, ADAPTER, _FIX)
    files = list_audio(root, extensions=_EXTENSIONS)
    if not any(_FILE.match(p.stem) for p in files):
        raise layout_error(NAME, root, f"no CaFE file names among {len(files)} audio file(s)", LAYOUT, _FIX)
    records, skipped, seen = [], [], {}
    for p in files:
        m = _FILE.match(p.stem)
        emo = m["emo"].upper() if m else ""
        intensity = m["int"] if m else None
        valid = (
            m is not None and m["actor"] in _AGES
            and (intensity in _INTENSITY if emo != "N" else intensity in (None, "0", "1"))
        )
        if not valid:
            skipped.append((p, "file name does not follow the CaFE scheme AA-E-I-S (actor 01-12, emotion C D J N P S T, "
                               "intensity 1/2; neutral AA-N-S), e.g. 01-C-1-1.wav or 01-N-1.wav"))
            continue
        seen.setdefault(p.stem.upper(), []).append(p)
        actor = m["actor"]
        records.append({
            "path": p, "speaker": actor, "emotion": EMOTIONS[emo], "gender": "m" if int(actor) % 2 else "f",
            "emotion_native": emo, "intensity": _INTENSITY.get(intensity) if emo != "N" else None,
            "text_id": m["sent"], "text": _SENTENCES.get(m["sent"]), "age": _AGES[actor],
        })
    check_duplicates(NAME, seen, LAYOUT)
    # utt_id relative to the deepest folder holding every file: the same ids whether the
    # CaFE folder or a folder above it was passed.
    base = Path(os.path.commonpath([r["path"].parent for r in records]))
    rows = build_rows(records, corpus, base, language="fr", naturalness="acted")
    return Scan(rows=rows, skipped=skipped_frame(skipped))


ADAPTER = Adapter(name=NAME, title="CaFE (Canadian French Emotional speech)", layout=LAYOUT, scan=scan)
