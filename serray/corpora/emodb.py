"""EmoDB (Berlin Database of Emotional Speech), German, acted.

File names ``SSTTTEV.wav``, e.g. ``wav/03a01Fa.wav``: speaker ``03``, text ``a01``, emotion
``F``, version ``a``. Emotion codes: ``W`` anger, ``L`` boredom, ``E`` disgust, ``A`` fear,
``F`` happiness (Freude; some public label tables wrongly map it to disgust), ``T``
sadness, ``N`` neutral. ``root`` is the EmoDB folder (holding ``wav/``) or the ``wav/``
folder itself.

Extra columns: ``emotion_native`` (the letter), ``text_id``, ``text``, ``version``,
``age``; and, when ``erkennung.txt`` (the listening test: Latin-1, tab separated, decimal
comma) is found in the root, the ``wav/`` folder or its parent, ``recognition_rate`` and
``naturalness_rating`` (percent of 20 listeners).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from serray.corpora.base import Adapter, Scan, build_rows, layout_error, list_audio, require_dir, skipped_frame

__all__ = ["ADAPTER", "EMOTIONS", "SPEAKERS", "TEXTS", "read_ratings", "scan"]

log = logging.getLogger(__name__)

NAME = "emodb"
LAYOUT = "EmoDB files named SSTTTEV.wav in a wav/ folder, e.g. emodb/wav/03a01Fa.wav"

#: emotion letter -> canonical label.
EMOTIONS: dict[str, str] = {
    "W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral",
}
#: speaker id -> (gender, age).
SPEAKERS: dict[str, tuple[str, int]] = {
    "03": ("m", 31), "08": ("f", 34), "09": ("f", 21), "10": ("m", 32), "11": ("m", 26),
    "12": ("m", 30), "13": ("f", 32), "14": ("f", 35), "15": ("m", 25), "16": ("f", 31),
}
#: text id -> German sentence.
TEXTS: dict[str, str] = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}

_FILE = re.compile(r"^(?P<spk>\d\d)(?P<text>[ab]\d\d)(?P<emo>[WLEAFTN])(?P<version>[a-z])$")
_RATINGS_FILE = "erkennung.txt"


def read_ratings(path: str | Path) -> pd.DataFrame:
    """Read EmoDB's ``erkennung.txt``: one row per file with ``recognition_rate`` and
    ``naturalness_rating`` (percent), indexed by file name (e.g. ``03a01Fa.wav``).

    Raises:
        ValueError: The file lacks the ``Satz``/``erkannt``/``natuerlich`` columns.
    """
    df = pd.read_csv(path, sep="\t", encoding="latin-1", dtype=str)
    df.columns = [c.strip() for c in df.columns]
    need = {"Satz", "erkannt", "natuerlich"}
    if not need <= set(df.columns):
        raise ValueError(f"{path}: expected tab-separated columns {sorted(need)}, found {list(df.columns)}")

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df[col].str.strip().str.replace(",", ".", regex=False), errors="coerce")

    out = pd.DataFrame(
        {"recognition_rate": num("erkannt").to_numpy(), "naturalness_rating": num("natuerlich").to_numpy()},
        index=df["Satz"].str.strip(),
    )
    return out[~out.index.duplicated()]


def scan(root: Path, corpus_name: str | None = None) -> Scan:
    """Scan an EmoDB folder (see the module docstring)."""
    corpus = corpus_name or NAME
    require_dir(root, ADAPTER, "pass the EmoDB folder that contains wav/ (or the wav/ folder itself)")
    audio_dir = root / "wav" if (root / "wav").is_dir() else root
    files = list_audio(audio_dir, recursive=False)
    if not any(_FILE.match(p.stem) for p in files):
        raise layout_error(
            NAME, audio_dir, f"no EmoDB file names among {len(files)} .wav file(s)", LAYOUT,
            "pass the EmoDB folder that contains wav/ (or the wav/ folder itself)",
        )
    records, skipped = [], []
    for p in files:
        m = _FILE.match(p.stem)
        if not m:
            skipped.append((p, "file name does not follow the EmoDB scheme SSTTTEV.wav (e.g. 03a01Fa.wav)"))
            continue
        if m["spk"] not in SPEAKERS:
            skipped.append((p, f"unknown EmoDB speaker {m['spk']!r} (known: {', '.join(SPEAKERS)})"))
            continue
        gender, age = SPEAKERS[m["spk"]]
        records.append({
            "path": p, "speaker": m["spk"], "emotion": EMOTIONS[m["emo"]], "gender": gender,
            "emotion_native": m["emo"], "text_id": m["text"], "text": TEXTS.get(m["text"]),
            "version": m["version"], "age": age,
        })
    rows = build_rows(records, corpus, audio_dir, language="de", naturalness="acted")
    ratings_file = next((d / _RATINGS_FILE for d in (root, audio_dir, audio_dir.parent) if (d / _RATINGS_FILE).is_file()), None)
    if ratings_file is not None and len(rows):
        ratings = read_ratings(ratings_file)
        names = [Path(p).name for p in rows["path"]]
        rows = rows.join(ratings.reindex(names).reset_index(drop=True))
        missing = int(rows["recognition_rate"].isna().sum())
        if missing:
            log.info("emodb: %d file(s) have no entry in %s (ratings left empty)", missing, ratings_file)
    else:
        log.debug("emodb: no %s near %s; recognition/naturalness ratings not added", _RATINGS_FILE, root)
    return Scan(rows=rows, skipped=skipped_frame(skipped))


ADAPTER = Adapter(name=NAME, title="EmoDB (Berlin Database of Emotional Speech)", layout=LAYOUT, scan=scan)
