"""The fold record: :class:`Fold`, the protocol vocabulary, and the fold table of run records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PROTOCOLS",
    "PREDEFINED_TRAIN",
    "PREDEFINED_VALIDATION",
    "SPEAKER_DEPENDENT_PROTOCOL",
    "SPLITS",
    "VALIDATION_MODES",
    "VALIDATION_RULES",
    "Fold",
    "folds_to_frame",
    "folds_from_frame",
]

#: Protocol names accepted by :func:`make_folds`.
PROTOCOLS: tuple[str, ...] = ("loso", "loso-session", "loco", "kfold", "cross-corpus", "kfold-speaker-dependent", "split")
#: Values of a ``split`` column that mean training and validation (protocol ``split``);
#: every other value is a test partition.
PREDEFINED_TRAIN: tuple[str, ...] = ("train",)
PREDEFINED_VALIDATION: tuple[str, ...] = ("development", "dev", "validation", "valid", "val")
#: Stratified k-fold over utterances, the same speakers in training and test (papers'
#: "random splits"; with k=5 and validation 20 % of the rest: 64/16/20). Its folds are
#: named and marked ``speaker-dependent``; results are optimistic.
SPEAKER_DEPENDENT_PROTOCOL = "kfold-speaker-dependent"
#: Split names, in the order :func:`folds_to_frame` writes them.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: ``speaker``: validation speakers are disjoint from training speakers;
#: ``stratified``: validation is a per-class utterance sample of the training speakers;
#: ``speaker-dependent``: the whole fold is speaker-dependent (``speaker_independent=False``).
VALIDATION_MODES: tuple[str, ...] = ("speaker", "stratified", "speaker-dependent")
#: How many validation speakers a fold holds out (``make_folds(validation=...)``):
#: ``coverage`` - whole speakers until they hold ``val_fraction`` (15 %) of the training
#: utterances and every class; ``balanced`` - the same, with speakers taken in the order of
#: how few folds they have validated so far, so that across folds every speaker validates
#: about equally often (with ``coverage`` some never do: 1 of EmoDB's 10 speakers and 3 of
#: EMOVO's 6 in LOSO, fold seed 0, and the pooled validation UA then describes the few that
#: do); ``fraction`` - ``val_fraction`` of the training speakers.
VALIDATION_RULES: tuple[str, ...] = ("coverage", "fraction", "balanced")


def _frozen_ids(values: Iterable[Any]) -> np.ndarray:
    arr = np.array([str(v) for v in values], dtype=object)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Fold:
    """One fold of a protocol: ``utt_id`` arrays of its three parts.

    Attributes:
        index: Position of the fold in its protocol (0-based).
        name: Human-readable name, e.g. ``"test=emodb_03"`` or ``"k=2"``.
        train: ``utt_id`` values used for fitting.
        validation: ``utt_id`` values used for model selection (early stopping, Tune).
        test: ``utt_id`` values used only for reporting.
        validation_mode: One of :data:`VALIDATION_MODES`.
    """

    index: int
    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    validation_mode: str

    def __post_init__(self) -> None:
        if self.validation_mode not in VALIDATION_MODES:
            raise ValueError(
                f"Fold {self.name!r}: validation_mode {self.validation_mode!r} is not one of {VALIDATION_MODES}"
            )
        for split in SPLITS:
            object.__setattr__(self, split, _frozen_ids(getattr(self, split)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fold):
            return NotImplemented
        return (
            self.index == other.index
            and self.name == other.name
            and self.validation_mode == other.validation_mode
            and all(np.array_equal(getattr(self, s), getattr(other, s)) for s in SPLITS)
        )

    __hash__ = None  # type: ignore[assignment]

    def split(self, name: str) -> np.ndarray:
        """The ``utt_id`` array of split ``name`` (``train``, ``validation`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
        return getattr(self, name)


# --------------------------------------------------------------------------- helpers


def _require_columns(manifest: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing} needed for {what}; available: {list(manifest.columns)}")



def folds_to_frame(folds: Sequence[Fold]) -> pd.DataFrame:
    """Long table of fold membership, for run records.

    Returns:
        Columns ``fold`` (index), ``fold_name``, ``split`` (train/validation/test),
        ``utt_id`` and ``validation_mode`` (so :func:`folds_from_frame` restores folds exactly).
    """
    frames = [
        pd.DataFrame({"fold": fold.index, "fold_name": fold.name, "split": split,
                      "utt_id": fold.split(split).astype(str), "validation_mode": fold.validation_mode})
        for fold in folds for split in SPLITS
    ]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             (("fold", "int64"), ("fold_name", str), ("split", str), ("utt_id", str),
                              ("validation_mode", str))})
    out = pd.concat(frames, ignore_index=True)
    out["fold"] = out["fold"].astype("int64")
    return out


def folds_from_frame(df: pd.DataFrame) -> list[Fold]:
    """Inverse of :func:`folds_to_frame`.

    A frame without ``validation_mode`` (older records) is read as ``speaker``, unless the
    fold name says ``speaker-dependent``.

    Raises:
        ValueError: Missing columns, unknown split names, or a fold with several names.
    """
    _require_columns(df, ("fold", "fold_name", "split", "utt_id"), "folds_from_frame")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"folds frame has unknown split value(s) {bad}; expected {SPLITS}")
    folds = []
    for index, g in df.groupby("fold", sort=True):
        names = g["fold_name"].unique()
        if len(names) != 1:
            raise ValueError(f"folds frame: fold {index} has several names {list(names)}")
        name = str(names[0])
        if "validation_mode" in g.columns:
            modes = g["validation_mode"].unique()
            if len(modes) != 1:
                raise ValueError(f"folds frame: fold {index} has several validation modes {list(modes)}")
            mode = str(modes[0])
        else:
            mode = "speaker-dependent" if "speaker-dependent" in name else "speaker"
        parts = {s: g.loc[g["split"] == s, "utt_id"].astype(str).to_numpy() for s in SPLITS}
        folds.append(Fold(index=int(index), name=name, validation_mode=mode, **parts))
    return folds
