"""Canonical emotion labels and label sets.

Corpus adapters write canonical names into the manifest's ``emotion`` column. A label set
filters and maps them for an experiment: ``native`` keeps every label of the corpus,
``4class`` keeps neutral/happy/sad/angry (IEMOCAP's ``excited`` merged into ``happy``, as is
standard in 4-class IEMOCAP work).

A *derived* label set (:class:`DerivedLabels`) computes the class from another manifest
column instead: ``valence3`` (paper 000, after Gideon et al.) bins every evaluator's
valence rating of IEMOCAP's ``valence_ratings`` (1-5) into ``low`` (< 3), ``medium`` (= 3)
and ``high`` (> 3) and takes the majority bin (:func:`majority_valence_bin`); an utterance
without a majority bin (a tie for the most frequent bin) or without ratings is excluded,
as the paper does. The categorical label stays in ``emotion_native``.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"emotion": ["angry", "boredom", "excited", "neutral"]})
    >>> apply_label_set(df, "4class")["emotion"].tolist()
    ['angry', 'happy', 'neutral']
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd

__all__ = [
    "CANONICAL", "EXTRA", "VALENCE_BINS", "LABEL_ORDER", "LABEL_SETS", "DerivedLabels", "register_label_set",
    "apply_label_set", "label_set_names", "majority_valence_bin",
]

log = logging.getLogger(__name__)

#: Canonical emotion names every adapter maps to.
CANONICAL: tuple[str, ...] = (
    "neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "boredom", "calm",
)
#: Further names some natural corpora carry (IEMOCAP; MSP-Podcast's contempt); kept in
#: ``native`` experiments.
EXTRA: tuple[str, ...] = ("excited", "frustrated", "other", "contempt")

#: Classes of the ``valence3`` label set, in order.
VALENCE_BINS: tuple[str, ...] = ("low", "medium", "high")
#: Order of the classes of an experiment (:func:`serray.training.data.class_list`).
LABEL_ORDER: tuple[str, ...] = (*CANONICAL, *EXTRA, *VALENCE_BINS)


@dataclass(frozen=True)
class DerivedLabels:
    """A label set whose classes are computed from a manifest column.

    Attributes:
        column: The manifest column read.
        derive: Column value -> class name, or ``None`` to exclude the utterance.
        classes: The classes ``derive`` can return (in order).
        needs: What provides the column (named in the error when it is missing).
    """

    column: str
    derive: Callable[[object], str | None]
    classes: tuple[str, ...]
    needs: str = ""


def majority_valence_bin(ratings: object, middle: float = 3.0) -> str | None:
    """The majority bin of ``;``-separated valence ratings: each rating is ``low`` below
    ``middle``, ``medium`` at it, ``high`` above it; the most frequent bin wins, and a tie
    for the most frequent (or no rating) gives ``None`` (the utterance is excluded).

    Example:
        >>> majority_valence_bin("2;3;2"), majority_valence_bin("4;3;3"), majority_valence_bin("2;4")
        ('low', 'medium', None)
        >>> majority_valence_bin("1.5;4;2"), majority_valence_bin(""), majority_valence_bin(None)
        ('low', None, None)
    """
    if ratings is None or (isinstance(ratings, float) and math.isnan(ratings)):
        return None
    values = [float(v) for v in str(ratings).split(";") if v.strip()]
    counts = {b: 0 for b in VALENCE_BINS}
    for v in values:
        counts["low" if v < middle else "medium" if v == middle else "high"] += 1
    top = max(counts.values())
    winners = [b for b, n in counts.items() if n == top]
    return winners[0] if top > 0 and len(winners) == 1 else None


#: name -> {source label: target label}; ``None`` keeps every label unchanged; a
#: :class:`DerivedLabels` computes the labels from another column.
LABEL_SETS: dict[str, Mapping[str, str] | DerivedLabels | None] = {
    "native": None,
    "4class": {"neutral": "neutral", "happy": "happy", "excited": "happy", "sad": "sad", "angry": "angry"},
    "valence3": DerivedLabels(
        "valence_ratings", majority_valence_bin, VALENCE_BINS,
        needs="the IEMOCAP adapter's per-evaluator valence ratings (prepare IEMOCAP again with `serray data` "
              "if its manifest predates them)",
    ),
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
    """Filter and map ``manifest['emotion']`` with label set ``name`` (or, for a
    :class:`DerivedLabels` set, compute it from its column).

    The original label is kept in ``emotion_native``; dropped rows are logged by label.

    Raises:
        ValueError: Unknown label set, a derived set's column missing from the manifest,
            or nothing left after filtering.
    """
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; available: {', '.join(label_set_names())}")
    mapping = LABEL_SETS[name]
    out = manifest.copy()
    if "emotion_native" not in out.columns:
        out["emotion_native"] = out["emotion"]
    if mapping is None:
        return out
    if isinstance(mapping, DerivedLabels):
        return _apply_derived(out, name, mapping)
    keep = out["emotion"].isin(list(mapping))
    if (~keep).any():
        dropped = out.loc[~keep, "emotion"].value_counts().to_dict()
        log.info("label set %s drops %d utterances: %s", name, int((~keep).sum()), dropped)
    out = out.loc[keep].copy()
    if out.empty:
        raise ValueError(f"label set {name!r} leaves no utterances (labels present: {sorted(manifest['emotion'].unique())})")
    out["emotion"] = out["emotion"].map(mapping)
    return out.reset_index(drop=True)


def _apply_derived(out: pd.DataFrame, name: str, derived: DerivedLabels) -> pd.DataFrame:
    """``emotion`` computed from ``derived.column``; utterances it gives no class are dropped."""
    if derived.column not in out.columns:
        raise ValueError(f"label set {name!r} needs the manifest column {derived.column!r} ({derived.needs}); "
                         f"the manifests here have none")
    labels = out[derived.column].map(derived.derive)
    keep = labels.notna()
    if (~keep).any():
        by_corpus = out.loc[~keep, "corpus"].value_counts().to_dict() if "corpus" in out else {}
        log.info("label set %s drops %d utterance(s) without a class from %s (e.g. no majority): %s",
                 name, int((~keep).sum()), derived.column, by_corpus)
    out = out.loc[keep].copy()
    if out.empty:
        raise ValueError(f"label set {name!r} leaves no utterances: no manifest row has a class from {derived.column!r}")
    out["emotion"] = labels[keep].astype(str)
    return out.reset_index(drop=True)
