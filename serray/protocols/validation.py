"""Validation carve-out: the validation part of a fold's training part.

Whole held-out speakers when the training part has at least three (gender-balanced, in
seeded order, never the last training speaker of a class; how many: the rules of
:data:`~serray.protocols.folds.VALIDATION_RULES`), else a per-class (stratified) sample
of utterances.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["carve_validation"]

log = logging.getLogger(__name__)

_MIN_SPEAKERS_FOR_SPEAKER_VALIDATION = 3


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _speaker_gender(train: pd.DataFrame) -> dict[str, str]:
    if "gender" not in train.columns:
        return {spk: "?" for spk in train["speaker"].unique()}
    out: dict[str, str] = {}
    for spk, g in train.groupby("speaker", sort=True)["gender"]:
        vals = g.dropna().astype(str)
        out[str(spk)] = vals.mode().iloc[0] if len(vals) else "?"
    return out


def _speaker_validation(
    train: pd.DataFrame, rule: _ValidationRule, rng: np.random.Generator, fold_name: str,
    used: Counter | None = None,
) -> list[str]:
    """Pick validation speakers, gender-balanced in seeded order, keeping every class in train.

    ``rule.n_speakers`` set: that many speakers (the ``fraction`` rule). Otherwise (the
    ``coverage`` and ``balanced`` rules) speakers are added until they hold ``rule.share``
    of the training utterances and every class of the training part, the latter up to
    twice that share. ``used`` (``balanced``): folds each speaker has validated so far;
    speakers who validated fewer come first (seeded order on ties), and it is updated.
    """
    spk_classes = {str(s): set(g) for s, g in train.groupby("speaker", sort=True)["emotion"]}
    spk_size = train.groupby("speaker", sort=True).size().rename(index=str).to_dict()
    class_speakers = Counter(c for classes in spk_classes.values() for c in classes)
    all_classes = set(class_speakers)
    gender = _speaker_gender(train)
    strata: dict[str, list[str]] = {}
    for spk in sorted(spk_classes):
        strata.setdefault(gender[spk], []).append(spk)
    stratum_order = [list(strata)[i] for i in rng.permutation(len(strata))]
    queues = {g: [strata[g][i] for i in rng.permutation(len(strata[g]))] for g in stratum_order}
    if used is not None:  # stable: the seeded order among speakers used equally often
        queues = {g: sorted(q, key=lambda s: used[s]) for g, q in queues.items()}
    chosen: list[str] = []
    covered: set[str] = set()
    taken = Counter({g: 0 for g in stratum_order})
    removable = lambda s: all(class_speakers[c] >= 2 for c in spk_classes[s])  # noqa: E731
    while len(chosen) < len(spk_classes) - 1:
        n_utts = sum(spk_size[s] for s in chosen)
        wanted = rule.wanted(len(chosen), n_utts, len(train), all_classes - covered)
        if wanted is None:
            break
        open_strata = [g for g in stratum_order if any(removable(s) for s in queues[g])]
        if not open_strata:
            break
        # min() keeps the seeded order on ties; balanced: then the stratum whose next speaker validated least
        g = min(open_strata, key=lambda h: (taken[h], 0 if used is None else min(used[s] for s in queues[h] if removable(s))))
        candidates = [s for s in queues[g] if removable(s)]
        if wanted:  # only classes are missing: the first speaker (any stratum) who brings one
            candidates = [s for h in sorted(open_strata, key=lambda s: taken[s]) for s in queues[h]
                          if removable(s) and spk_classes[s] & wanted] or candidates
        pick = candidates[0]
        queues[gender[pick]].remove(pick)
        chosen.append(pick)
        covered |= spk_classes[pick]
        taken[gender[pick]] += 1
        class_speakers.subtract(spk_classes[pick])
    rule.report(fold_name, chosen, covered, all_classes, sum(spk_size[s] for s in chosen), len(train))
    if used is not None:
        used.update(chosen)
    return chosen


@dataclass(frozen=True)
class _ValidationRule:
    """How many validation speakers a fold holds out (see :data:`VALIDATION_RULES`)."""

    name: str
    share: float
    n_speakers: int | None = None
    min_speakers: int = 1

    def wanted(self, n_chosen: int, n_utts: int, n_train: int, missing: set[str]) -> set[str] | None:
        """``None``: stop; an empty set: add any speaker; else the classes still missing."""
        if self.n_speakers is not None:
            return set() if n_chosen < self.n_speakers else None
        if n_chosen < self.min_speakers or n_utts < self.share * n_train:
            return set()
        if missing and n_utts < 2 * self.share * n_train:
            return missing
        return None

    def report(self, fold: str, chosen: list[str], covered: set[str], classes: set[str], n_utts: int, n_train: int) -> None:
        if self.n_speakers is not None and len(chosen) < self.n_speakers:
            log.warning("fold %s: only %d of %d validation speakers could be held out without removing the last "
                        "training speaker of a class", fold, len(chosen), self.n_speakers)
        elif self.n_speakers is None and chosen and (n_utts < self.share * n_train or covered != classes):
            log.warning("fold %s: validation holds %d of %d training utterances (%.0f %%, wanted %.0f %%) and lacks "
                        "class(es) %s: no more speakers can be held out without removing the last training "
                        "speaker of a class", fold, n_utts, n_train, 100 * n_utts / max(n_train, 1),
                        100 * self.share, sorted(classes - covered) or "none")
        log.debug("fold %s: validation speakers %s (%d utterances, %d of %d classes)", fold, chosen, n_utts,
                  len(covered), len(classes))


def _stratified_validation(train: pd.DataFrame, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Per-class sample of ``round(val_fraction * count)`` utterances, leaving >= 1 per class in train."""
    picked: list[str] = []
    for _, ids in train.groupby("emotion", sort=True)["utt_id"]:
        n = min(len(ids) - 1, _round_half_up(val_fraction * len(ids)))
        if n > 0:
            picked.extend(ids.to_numpy()[rng.permutation(len(ids))[:n]].tolist())
    return np.array(sorted(picked), dtype=object)


def carve_validation(
    m: pd.DataFrame,
    train_mask: np.ndarray,
    *,
    fold_index: int,
    fold_name: str,
    seed: int,
    val_fraction: float,
    min_val_speakers: int,
    speaker_dependent: bool,
    validation: str,
    used: Counter | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Split a fold's training part into (train ids, validation ids, validation_mode).

    ``used`` (the ``balanced`` rule only): folds each speaker validated so far, updated.
    """
    rng = np.random.default_rng([seed, fold_index])
    train = m.loc[train_mask]
    n_spk = train["speaker"].nunique()
    if not speaker_dependent and n_spk >= _MIN_SPEAKERS_FOR_SPEAKER_VALIDATION:
        rule = _ValidationRule(validation, val_fraction, min_speakers=min_val_speakers)
        if validation == "fraction":
            n_val = max(min_val_speakers, _round_half_up(val_fraction * n_spk))
            if n_val > n_spk - 1:
                log.warning("fold %s: %d validation speakers requested but training has %d; holding out %d",
                            fold_name, n_val, n_spk, n_spk - 1)
                n_val = n_spk - 1
            rule = _ValidationRule(validation, val_fraction, n_speakers=n_val)
        val_spk = _speaker_validation(train, rule, rng, fold_name, used)
        if val_spk:
            is_val = train["speaker"].isin(val_spk).to_numpy()
            return train["utt_id"].to_numpy()[~is_val], train["utt_id"].to_numpy()[is_val], "speaker"
        log.warning("fold %s: no validation speaker can be held out; using a stratified validation split", fold_name)
    elif not speaker_dependent:
        log.info("fold %s: training part has %d speaker(s) (< %d); validation is stratified by emotion, "
                 "not speaker-independent", fold_name, n_spk, _MIN_SPEAKERS_FOR_SPEAKER_VALIDATION)
    val = _stratified_validation(train, val_fraction, rng)
    is_val = train["utt_id"].isin(val).to_numpy()
    mode = "speaker-dependent" if speaker_dependent else "stratified"
    return train["utt_id"].to_numpy()[~is_val], train["utt_id"].to_numpy()[is_val], mode

