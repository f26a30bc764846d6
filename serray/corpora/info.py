"""Summaries of manifests: counts by corpus x emotion x gender, speakers, corpora, bad files.

Example:
    >>> import pandas as pd
    >>> m = pd.DataFrame({"corpus": ["a", "a", "a"], "speaker": ["a_1", "a_1", "a_2"],
    ...                   "emotion": ["sad", "sad", "angry"], "gender": ["f", "f", "m"]})
    >>> summary_table(m).loc[("a", "sad")].tolist()
    [2, 0, 2]
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from serray.workdir import Workdir

__all__ = ["summary_table", "speaker_table", "corpus_table", "bad_table"]

_UNKNOWN = "unknown"


def _check(manifest: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}; pass a manifest from prepare_corpus or load_manifests")


def _gender(manifest: pd.DataFrame) -> pd.Series:
    if "gender" not in manifest.columns:
        return pd.Series(_UNKNOWN, index=manifest.index)
    return manifest["gender"].astype(object).where(manifest["gender"].notna(), _UNKNOWN).astype(str)


def summary_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Utterance counts by corpus x emotion (rows) and gender (columns).

    Columns ``f``, ``m`` (always), ``unknown`` (only when some rows have no gender) and
    ``total``; a last row ``("total", "")`` sums every column.

    Raises:
        ValueError: ``manifest`` lacks ``corpus`` or ``emotion``.
    """
    _check(manifest, ("corpus", "emotion"))
    gender = _gender(manifest)
    table = pd.crosstab([manifest["corpus"].astype(str), manifest["emotion"].astype(str)], gender)
    cols = ["f", "m"] + ([_UNKNOWN] if _UNKNOWN in table.columns else [])
    table = table.reindex(columns=cols, fill_value=0)
    table["total"] = table.sum(axis=1)
    total = pd.DataFrame([table.sum(axis=0)], index=pd.MultiIndex.from_tuples([("total", "")], names=table.index.names))
    out = pd.concat([table, total]).astype("int64")
    out.columns.name = "gender"
    return out


def speaker_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per speaker: ``corpus``, ``speaker``, ``gender``, ``utterances``,
    ``emotions`` (number of distinct labels) and, when durations are known, ``minutes``.

    Raises:
        ValueError: ``manifest`` lacks ``corpus``, ``speaker`` or ``emotion``.
    """
    _check(manifest, ("corpus", "speaker", "emotion"))
    df = manifest.assign(_gender=_gender(manifest))
    g = df.groupby(["corpus", "speaker"], sort=True)
    out = pd.DataFrame({
        "gender": g["_gender"].agg(lambda s: "/".join(sorted(set(s)))),
        "utterances": g.size(),
        "emotions": g["emotion"].nunique(),
    })
    if "duration_s" in df.columns:
        out["minutes"] = (g["duration_s"].sum() / 60.0).round(2)
    return out.reset_index()


def corpus_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per corpus: ``utterances``, ``speakers``, ``female_speakers``,
    ``male_speakers``, ``emotions`` (comma-separated), ``language``, ``naturalness`` and,
    when durations are known, ``hours``.

    Raises:
        ValueError: ``manifest`` lacks ``corpus``, ``speaker`` or ``emotion``.
    """
    _check(manifest, ("corpus", "speaker", "emotion"))
    df = manifest.assign(_gender=_gender(manifest))
    rows = []
    for corpus, d in df.groupby("corpus", sort=True):
        spk = d.groupby("speaker")["_gender"].first()
        row = {
            "corpus": corpus,
            "utterances": len(d),
            "speakers": len(spk),
            "female_speakers": int((spk == "f").sum()),
            "male_speakers": int((spk == "m").sum()),
            "emotions": ",".join(sorted(d["emotion"].astype(str).unique())),
        }
        for col in ("language", "naturalness"):
            row[col] = ",".join(sorted(d[col].dropna().astype(str).unique())) if col in d.columns else ""
        if "duration_s" in d.columns:
            row["hours"] = round(float(d["duration_s"].sum()) / 3600.0, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def bad_table(workdir: str | os.PathLike) -> pd.DataFrame:
    """The reported files of every prepared corpus: ``corpus``, ``path``, ``reason``,
    ``excluded`` (False: kept with a warning; a report written before that column was
    added lists excluded files only) from ``W/manifests/*.bad.csv``; empty when there are none."""
    manifests = Workdir(workdir).manifests_dir
    files = sorted(manifests.glob("*.bad.csv")) if manifests.is_dir() else []
    parts = []
    for f in files:
        part = pd.read_csv(f, dtype=str).assign(corpus=Path(f).name[: -len(".bad.csv")])
        part["excluded"] = part["excluded"].str.lower().ne("false") if "excluded" in part.columns else True
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["corpus", "path", "reason", "excluded"])
    return pd.concat(parts, ignore_index=True)[["corpus", "path", "reason", "excluded"]]
