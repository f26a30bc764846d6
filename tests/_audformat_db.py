"""A small audformat database written with audformat's own API (for the audformat adapter's tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping


def write_audformat_db(root: Path, files: Mapping[str, tuple[str, str, str | None]], genders: Mapping[str, str],
                       name: str = "audformat", languages: tuple[str, ...] = ("deu",)) -> Path:
    """Save a database to ``root``: ``files`` is ``{file relative to root: (speaker, emotion, split or None)}``.

    The layout follows audb's corpora: an ``emotion`` scheme, a ``speaker`` scheme whose
    labels carry the gender, the emotion labels in one filewise table per split
    (``emotion.<split>``, or ``emotion`` for files without a split) and the speakers in a
    separate ``files`` table.
    """
    import audformat

    db = audformat.Database(name, languages=list(languages))
    labels = sorted({e for _, e, _ in files.values()})
    db.schemes["emotion"] = audformat.Scheme(labels=labels)
    db.schemes["speaker"] = audformat.Scheme("str", labels={s: {"gender": g} for s, g in genders.items()})
    for split in sorted({s for _, _, s in files.values() if s}):
        db.splits[split] = audformat.Split("test" if split.startswith("test") else split)
    for split in sorted({s or "" for _, _, s in files.values()}):
        names = sorted(f for f, v in files.items() if (v[2] or "") == split)
        tid = f"emotion.{split}" if split else "emotion"
        db[tid] = audformat.Table(audformat.filewise_index(names), split_id=split or None)
        db[tid]["emotion"] = audformat.Column(scheme_id="emotion")
        db[tid]["emotion"].set([files[f][1] for f in names])
    every = sorted(files)
    db["files"] = audformat.Table(audformat.filewise_index(every))
    db["files"]["speaker"] = audformat.Column(scheme_id="speaker")
    db["files"]["speaker"].set([files[f][0] for f in every])
    db.save(str(root))
    return root
