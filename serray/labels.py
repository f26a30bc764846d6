"""Canonical emotion labels and label sets.

Corpus adapters write canonical names into the manifest's ``emotion`` column. A label set
filters and maps them for an experiment: ``native`` keeps every label of the corpus,
``4class`` keeps neutral/happy/sad/angry (IEMOCAP's ``excited`` merged into ``happy``, as is
standard in 4-class IEMOCAP work).

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"emotion": ["angry", "boredom", "excited", "neutral"]})
    >>> apply_label_set(df, "4class")["emotion"].tolist()
    ['angry', 'happy', 'neutral']
"""

from __future__ import annotations

import logging
from typing import Mapping

import pandas as pd

__all__ = ["CANONICAL", "EXTRA", "LABEL_SETS", "register_label_set", "apply_label_set", "label_set_names"]

log = logging.getLogger(__name__)

#: Canonical emotion names every adapter maps to.
CANONICAL: tuple[str, ...] = (
    "neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "boredom", "calm",
)
#: Further names some natural corpora carry (IEMOCAP); kept in ``native`` experiments.
EXTRA: tuple[str, ...] = ("excited", "frustrated", "other")

#: name -> {source label: target label}; ``None`` keeps every label unchanged.
LABEL_SETS: dict[str, Mapping[str, str] | None] = {
    "native": None,
    "4class": {"neutral": "neutral", "happy": "happy", "excited": "happy", "sad": "sad", "angry": "angry"},
}


def register_label_set(name: str, mapping: Mapping[str, str]) -> None:
    """Register a label set: labels not in ``mapping`` are dropped, the others renamed.

    Raises:
        ValueError: A target label that is not canonical.
    """
    bad = sorted(set(mapping.values()) - set(CANONICAL) - set(EXTRA))
    if bad:
        raise ValueError(f"label set {name!r} maps to non-canonical labels {bad}; use names from {CANONICAL}")
    LABEL_SETS[name] = dict(mapping)


def label_set_names() -> list[str]:
    """Names of the registered label sets."""
    return sorted(LABEL_SETS)


def apply_label_set(manifest: pd.DataFrame, name: str) -> pd.DataFrame:
    """Filter and map ``manifest['emotion']`` with label set ``name``.

    The original label is kept in ``emotion_native``; dropped rows are logged by label.

    Raises:
        ValueError: Unknown label set, or nothing left after filtering.
    """
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; available: {', '.join(label_set_names())}")
    mapping = LABEL_SETS[name]
    out = manifest.copy()
    if "emotion_native" not in out.columns:
        out["emotion_native"] = out["emotion"]
    if mapping is None:
        return out
    keep = out["emotion"].isin(list(mapping))
    if (~keep).any():
        dropped = out.loc[~keep, "emotion"].value_counts().to_dict()
        log.info("label set %s drops %d utterances: %s", name, int((~keep).sum()), dropped)
    out = out.loc[keep].copy()
    if out.empty:
        raise ValueError(f"label set {name!r} leaves no utterances (labels present: {sorted(manifest['emotion'].unique())})")
    out["emotion"] = out["emotion"].map(mapping)
    return out.reset_index(drop=True)
