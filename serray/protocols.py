"""Evaluation protocols: folds, validation carve-out and the leakage guard.

A protocol turns a manifest into a list of :class:`Fold` objects, each holding the
``utt_id`` values of its training, validation and test parts:

- ``loso``: leave one speaker out (one fold per speaker).
- ``loso-session``: leave one session out (one fold per ``session`` value, e.g. IEMOCAP).
- ``loco``: leave one corpus out (train on the other corpora).
- ``kfold``: speaker-independent stratified k-fold (speakers never cross folds).
- ``cross-corpus``: one fold, train on ``train_corpora`` and test on ``test_corpora``.
- ``split``: a corpus's predefined partitions from its ``split`` column (e.g. MSP-Podcast's
  official ``train``/``development``/``test1``/``test2``): training on ``train``,
  validation on ``development``, one fold per test partition (see :func:`make_folds`).

Validation data are carved out of each fold's training part. When that part has at least
three speakers the validation part consists of whole held-out speakers (chosen from the
seed, balanced by gender where known, never removing the last training speaker of a
class): by default as many as hold 15 % of the training utterances and every class
(``validation="coverage"``: two speakers of an EmoDB LOSO fold, not one, so that early
stopping, Tune and ensemble selection do not hang on one speaker's 35-71 utterances).
With fewer speakers it is a per-class (stratified) sample of utterances.

Every fold is checked by :func:`check_leakage` before :func:`make_folds` returns it: a
test speaker that also appears in training or validation is refused, and so is a test
utterance whose audio (the same file, or identical bytes; see :mod:`serray.duplicates`)
is also in training or validation.

Example:
    >>> import pandas as pd
    >>> m = pd.DataFrame({
    ...     "utt_id": [f"u{i}" for i in range(12)],
    ...     "corpus": "demo",
    ...     "speaker": [f"demo_{i % 4}" for i in range(12)],
    ...     "emotion": ["angry", "sad", "neutral"] * 4,
    ... })
    >>> folds = make_folds(m, "loso")
    >>> [f.name for f in folds]
    ['test=demo_0', 'test=demo_1', 'test=demo_2', 'test=demo_3']
    >>> folds[0].validation_mode
    'speaker'
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PROTOCOLS",
    "SPEAKER_DEPENDENT_PROTOCOL",
    "SPLITS",
    "VALIDATION_MODES",
    "VALIDATION_RULES",
    "Fold",
    "LeakageError",
    "FoldClassError",
    "make_folds",
    "check_leakage",
    "check_fold_classes",
    "folds_to_frame",
    "folds_from_frame",
]

log = logging.getLogger(__name__)

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

_DEFAULT_GROUP = {"loso": "speaker", "loso-session": "session", "loco": "corpus", "kfold": "speaker"}
_MIN_SPEAKERS_FOR_SPEAKER_VALIDATION = 3


class LeakageError(ValueError):
    """A fold whose test (or validation) speakers or audio also appear in its training data."""


class FoldClassError(ValueError):
    """A fold whose training part lacks a class of the experiment."""


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


def _as_list(value: str | Sequence[str] | None, arg: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError(f"{arg} is empty; name at least one corpus")
    return [str(v) for v in items]


def _require_columns(manifest: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing} needed for {what}; available: {list(manifest.columns)}")


def _prepare(manifest: pd.DataFrame) -> pd.DataFrame:
    """Copy sorted by utt_id (so folds do not depend on row order), with str keys."""
    _require_columns(manifest, ("utt_id", "speaker", "emotion"), "folds")
    if manifest.empty:
        raise ValueError("manifest has no utterances; cannot make folds")
    if manifest["utt_id"].duplicated().any():
        dup = manifest.loc[manifest["utt_id"].duplicated(), "utt_id"].iloc[:3].tolist()
        raise ValueError(f"manifest has duplicate utt_id values, e.g. {dup}; utt_id must be unique")
    for col in ("speaker", "emotion"):
        if manifest[col].isna().any():
            raise ValueError(f"manifest column {col!r} has {int(manifest[col].isna().sum())} empty value(s)")
    m = manifest.copy()
    for col in ("utt_id", "speaker", "emotion") + (("corpus",) if "corpus" in m.columns else ()):
        m[col] = m[col].astype(str)
    return m.sort_values("utt_id", kind="stable").reset_index(drop=True)


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


def _carve_validation(
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


def _test_groups(m: pd.DataFrame, protocol: str, group_column: str) -> list[tuple[str, np.ndarray]]:
    """(group value, test mask) per value of ``group_column`` (loso, loso-session, loco)."""
    if group_column not in m.columns:
        if protocol == "loso-session":
            raise ValueError(
                "protocol 'loso-session' needs a 'session' column in the manifest, and it has none; "
                "use a corpus whose adapter writes sessions (e.g. IEMOCAP), add a 'session' column, "
                "or use protocol 'loso'"
            )
        raise ValueError(f"group_column {group_column!r} is not a manifest column; available: {list(m.columns)}")
    col = m[group_column]
    if col.isna().any():
        raise ValueError(
            f"protocol {protocol!r}: {int(col.isna().sum())} utterance(s) have no {group_column!r} value; "
            f"fill the column or drop those rows (e.g. restrict to corpora that have {group_column!r})"
        )
    values = col.astype(str).to_numpy()
    groups = sorted(set(values))
    if len(groups) < 2:
        fix = "add a second corpus (--corpora A B)" if group_column == "corpus" else "use another protocol"
        raise ValueError(f"protocol {protocol!r} needs at least 2 distinct {group_column!r} values, "
                         f"found {groups}; {fix}")
    return [(g, values == g) for g in groups]


# --------------------------------------------------------------------------- public API


def make_folds(
    manifest: pd.DataFrame,
    protocol: str,
    *,
    k: int = 5,
    seed: int = 0,
    val_fraction: float | None = None,
    min_val_speakers: int = 1,
    validation: str = "coverage",
    train_corpora: str | Sequence[str] | None = None,
    test_corpora: str | Sequence[str] | None = None,
    speaker_independent: bool = True,
    group_column: str | None = None,
) -> list[Fold]:
    """Split ``manifest`` into folds following ``protocol``.

    Folds do not depend on the manifest's row order (rows are sorted by ``utt_id``) and
    are identical for the same ``seed``. For ``loso``, ``loso-session``, ``loco`` and
    ``kfold`` every utterance is in exactly one test part.

    Args:
        manifest: Manifest with at least ``utt_id``, ``speaker``, ``emotion`` (plus
            ``corpus`` for ``loco``/``cross-corpus``, ``session`` for ``loso-session``;
            ``gender`` is used for balancing validation speakers when present).
        protocol: One of :data:`PROTOCOLS`; ``kfold-speaker-dependent`` is ``kfold`` with
            ``speaker_independent=False`` and a validation fraction of 0.2.
        k: Number of folds for ``kfold``.
        seed: Seed for fold assignment (``kfold``) and validation choice.
        val_fraction: ``coverage`` rule: the share of the training part's utterances the
            validation speakers hold at least; ``fraction`` rule: the share of training
            speakers held out; stratified mode: the share of each class's training
            utterances. ``0 < val_fraction < 1`` (default 0.15; 0.2 for
            ``kfold-speaker-dependent``).
        min_val_speakers: Lower bound on the number of validation speakers.
        validation: One of :data:`VALIDATION_RULES`: ``coverage`` (default) holds out
            whole speakers until they have ``val_fraction`` of the training utterances
            and every class of the training part (up to twice that share);
            ``balanced`` does the same, taking first the speakers that validated in
            fewer of the earlier folds (every speaker validates about equally often);
            ``fraction`` holds out ``round(val_fraction * n_speakers)`` speakers (at
            least ``min_val_speakers``), the rule before 2026-12 (one speaker per
            EmoDB LOSO fold).
        train_corpora: Training corpora for ``cross-corpus``.
        test_corpora: Test corpora for ``cross-corpus``.
        speaker_independent: ``False`` (``kfold`` only) gives plain stratified k-fold;
            its folds are named and marked ``speaker-dependent`` (optimistic results).
        group_column: Column whose values define the test groups; defaults to
            ``speaker`` (loso, kfold), ``session`` (loso-session), ``corpus`` (loco),
            ``split`` (split).

    Protocol ``split`` reads predefined partitions from the ``split`` column (values
    compared case-insensitively): ``train`` is the training part, ``development`` (or
    ``dev``/``validation``) the validation part, and each other value a test partition,
    one fold each (``test=test1``, ``test=test2``, ...; the folds share training and
    validation). Utterances without a value are left out. Without a development
    partition, validation is carved out of ``train`` as for the other protocols. The
    leakage check applies as everywhere: a test speaker in training is refused.

    Returns:
        The folds, in order (``Fold.index`` = position).

    Raises:
        ValueError: Unknown protocol, bad argument, missing column, too few
            speakers/corpora/sessions for the protocol.
        LeakageError: A fold would put a test speaker into training or validation.

    Example:
        >>> import pandas as pd
        >>> m = pd.DataFrame({"utt_id": [f"u{i}" for i in range(20)],
        ...                   "corpus": ["a"] * 10 + ["b"] * 10,
        ...                   "speaker": [f"s{i % 5}" for i in range(10)] + [f"t{i % 5}" for i in range(10)],
        ...                   "emotion": ["sad", "angry"] * 10})
        >>> [f.name for f in make_folds(m, "loco")]
        ['test=a', 'test=b']
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    if protocol == SPEAKER_DEPENDENT_PROTOCOL:
        protocol, speaker_independent = "kfold", False
        val_fraction = 0.2 if val_fraction is None else val_fraction
    val_fraction = 0.15 if val_fraction is None else val_fraction
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if validation not in VALIDATION_RULES:
        raise ValueError(f"unknown validation rule {validation!r}; use one of {VALIDATION_RULES}")
    if int(min_val_speakers) < 1:
        raise ValueError(f"min_val_speakers must be >= 1, got {min_val_speakers}")
    if not speaker_independent and protocol != "kfold":
        raise ValueError(
            f"speaker_independent=False is only offered for protocol 'kfold', not {protocol!r}; "
            f"{protocol!r} is speaker-independent by construction"
        )
    train_list = _as_list(train_corpora, "train_corpora")
    test_list = _as_list(test_corpora, "test_corpora")
    if protocol != "cross-corpus" and (train_list or test_list):
        raise ValueError(f"train_corpora/test_corpora apply only to protocol 'cross-corpus', not {protocol!r}")
    if protocol == "cross-corpus" and group_column is not None:
        raise ValueError("group_column does not apply to protocol 'cross-corpus'")

    m = _prepare(manifest)
    common = dict(seed=int(seed), val_fraction=float(val_fraction), min_val_speakers=int(min_val_speakers),
                  validation=validation)
    ids = m["utt_id"].to_numpy()
    # (name, train mask, test mask)
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []

    if protocol in ("loso", "loso-session", "loco"):
        col = group_column or _DEFAULT_GROUP[protocol]
        if col == "corpus":
            _require_columns(m, ("corpus",), f"protocol {protocol!r}")
        for value, test_mask in _test_groups(m, protocol, col):
            parts.append((f"test={value}", ~test_mask, test_mask))
    elif protocol == "kfold":
        parts = _kfold_parts(m, int(k), int(seed), speaker_independent, group_column or "speaker")
    elif protocol == "cross-corpus":
        parts = [_cross_corpus_part(m, train_list, test_list)]

    folds: list[Fold] = _predefined_folds(m, group_column or "split", common) if protocol == "split" else []
    used = Counter() if validation == "balanced" else None  # folds each speaker validated so far
    for index, (name, train_mask, test_mask) in enumerate(parts):
        tr, va, mode = _carve_validation(
            m, train_mask, fold_index=index, fold_name=name,
            speaker_dependent=not speaker_independent, used=used, **common,
        )
        folds.append(Fold(index=index, name=name, train=tr, validation=va, test=ids[test_mask],
                          validation_mode=mode))

    if protocol not in ("cross-corpus", "split"):
        counts = Counter(u for f in folds for u in f.test)
        if len(counts) != len(ids) or max(counts.values()) != 1:
            raise RuntimeError(f"protocol {protocol!r}: test parts do not cover each utterance exactly once")
    if not speaker_independent:
        log.warning(
            "kfold with speaker_independent=False: the same speakers appear in training and test; "
            "results are optimistic and not comparable with speaker-independent numbers"
        )
    check_leakage(m, folds, allow_speaker_dependent=not speaker_independent)
    log.info("protocol %s: %d fold(s) over %d utterances, %d speakers", protocol, len(folds), len(m),
             m["speaker"].nunique())
    return folds


def _predefined_folds(m: pd.DataFrame, column: str, common: dict[str, Any]) -> list[Fold]:
    """Protocol ``split``: one fold per test partition of ``column`` (see :func:`make_folds`)."""
    if column not in m.columns:
        raise ValueError(f"protocol 'split' needs a {column!r} column with predefined partitions (train, development, "
                         f"test...), and the manifest has none; use a corpus whose adapter writes it (e.g. msppodcast) "
                         f"or another protocol")
    values = m[column].astype("string").str.strip().str.lower().fillna("")
    train = values.isin(PREDEFINED_TRAIN).to_numpy()
    val = values.isin(PREDEFINED_VALIDATION).to_numpy()
    tests = sorted(set(values) - {""} - set(PREDEFINED_TRAIN) - set(PREDEFINED_VALIDATION))
    if not train.any() or not tests:
        raise ValueError(f"protocol 'split' needs a 'train' partition and at least one test partition in column "
                         f"{column!r}, found {sorted(set(values) - {''})}")
    if (values == "").any():
        log.info("protocol split: %d utterance(s) without a %r value left out", int((values == "").sum()), column)
    ids, spk = m["utt_id"].to_numpy(), m["speaker"].to_numpy()
    if val.any():
        tr, va = ids[train], ids[val]
        mode = "speaker" if not set(spk[val]) & set(spk[train]) else "stratified"
        if mode == "stratified":
            log.warning("protocol split: the %r validation partition shares speakers with training; "
                        "validation is not speaker-independent", column)
    else:
        log.info("protocol split: no development partition in %r; validation carved out of 'train'", column)
        tr, va, mode = _carve_validation(m, train, fold_index=0, fold_name="split", speaker_dependent=False, **common)
    return [Fold(index=i, name=f"test={t}", train=tr, validation=va, test=ids[(values == t).to_numpy()],
                 validation_mode=mode) for i, t in enumerate(tests)]


def _kfold_parts(
    m: pd.DataFrame, k: int, seed: int, speaker_independent: bool, group_column: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if k < 2:
        raise ValueError(f"kfold needs k >= 2, got k={k}")
    y = m["emotion"].to_numpy()
    x = np.zeros(len(m))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if speaker_independent:
            if group_column not in m.columns:
                raise ValueError(f"group_column {group_column!r} is not a manifest column")
            groups = m[group_column].astype(str).to_numpy()
            _check_kfold_groups(k, len(set(groups)), group_column)
            from sklearn.model_selection import StratifiedGroupKFold  # imported here: ~1 s, kfold only

            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = list(splitter.split(x, y, groups))
        else:
            if len(m) < k:
                raise ValueError(f"kfold with k={k} needs at least {k} utterances, the manifest has {len(m)}")
            from sklearn.model_selection import StratifiedKFold

            splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y))
    for w in caught:
        log.info("kfold: %s", w.message)
    suffix = "" if speaker_independent else " (speaker-dependent)"
    parts = []
    for i, (tr_idx, te_idx) in enumerate(splits):
        if len(te_idx) == 0:
            raise ValueError(f"kfold: fold k={i} got no test utterances; lower k")
        train_mask = np.zeros(len(m), dtype=bool)
        train_mask[tr_idx] = True
        parts.append((f"k={i}{suffix}", train_mask, ~train_mask))
    return parts


def _check_kfold_groups(k: int, n_groups: int, group_column: str) -> None:
    """Refuse a speaker-independent kfold with fewer groups than folds; advise only a k that works.

    k >= 2 is required, so with a single group no k helps: the advice then is more
    groups, not a lower k.
    """
    if n_groups >= k:
        return
    if n_groups < 2:
        raise ValueError(
            f"kfold needs at least 2 distinct {group_column!r} values to keep them apart, the manifest has "
            f"{n_groups}, and k must be >= 2; add data with more {group_column!r} values (e.g. a second corpus), "
            "or use make_folds(..., speaker_independent=False) for a speaker-dependent split"
        )
    raise ValueError(
        f"kfold with k={k} needs at least {k} distinct {group_column!r} values, the manifest has "
        f"{n_groups}; lower k (e.g. k={n_groups}) or use protocol 'loso'"
    )


def _cross_corpus_part(
    m: pd.DataFrame, train_list: list[str] | None, test_list: list[str] | None
) -> tuple[str, np.ndarray, np.ndarray]:
    _require_columns(m, ("corpus",), "protocol 'cross-corpus'")
    if not train_list or not test_list:
        raise ValueError("protocol 'cross-corpus' needs both train_corpora and test_corpora "
                         "(e.g. --train-corpora emodb --test-corpora emovo)")
    available = sorted(m["corpus"].unique())
    unknown = sorted(set(train_list + test_list) - set(available))
    if unknown:
        raise ValueError(f"cross-corpus: corpora {unknown} are not in the manifest; available: {available}")
    overlap = sorted(set(train_list) & set(test_list))
    if overlap:
        raise ValueError(f"cross-corpus: corpora {overlap} are in both train_corpora and test_corpora; "
                         "a corpus may be on one side only")
    unused = sorted(set(available) - set(train_list) - set(test_list))
    if unused:
        log.info("cross-corpus: corpora %s are in neither train_corpora nor test_corpora and are ignored", unused)
    corpus = m["corpus"].to_numpy()
    return (f"train={'+'.join(train_list)};test={'+'.join(test_list)}",
            np.isin(corpus, train_list), np.isin(corpus, test_list))


def check_leakage(
    manifest: pd.DataFrame, folds: Sequence[Fold], *, allow_speaker_dependent: bool = False
) -> None:
    """Refuse folds that leak speakers (or utterances) from training into evaluation.

    Checks, per fold: every ``utt_id`` is in the manifest; train, validation and test are
    disjoint; no test utterance has the same audio as a train or validation utterance
    (same resolved path or identical file bytes, when the manifest has ``path``; see
    :func:`_check_shared_audio`); no test speaker is in train or validation; and, when
    ``validation_mode == "speaker"``, no validation speaker is in train.

    Args:
        manifest: The manifest the folds were made from (``utt_id``, ``speaker``).
        folds: Folds to check.
        allow_speaker_dependent: Accept folds marked ``speaker-dependent`` (from
            ``make_folds(..., speaker_independent=False)``), checking only that their
            parts are disjoint and share no audio.

    Raises:
        LeakageError: Names the fold and the leaking speakers, utterances or files.
        ValueError: Folds reference ``utt_id`` values missing from the manifest.
    """
    _require_columns(manifest, ("utt_id", "speaker"), "the leakage check")
    speaker_of = pd.Series(manifest["speaker"].astype(str).to_numpy(), index=manifest["utt_id"].astype(str))
    copies = _duplicate_keys(manifest)
    for fold in folds:
        spk: dict[str, set[str]] = {}
        for split in SPLITS:
            ids = fold.split(split)
            unknown = pd.Index(ids).difference(speaker_of.index)
            if len(unknown):
                raise ValueError(f"fold {fold.name!r}: {len(unknown)} {split} utt_id(s) are not in the manifest, "
                                 f"e.g. {list(unknown[:3])}; use the manifest the folds were made from")
            spk[split] = set(speaker_of.loc[ids])
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            shared = np.intersect1d(fold.split(a).astype(str), fold.split(b).astype(str))
            if len(shared):
                raise LeakageError(f"fold {fold.name!r}: {len(shared)} utterance(s) in both {a} and {b}, "
                                   f"e.g. {shared[:3].tolist()}")
        _check_shared_audio(fold, copies)
        if fold.validation_mode == "speaker-dependent":
            if allow_speaker_dependent:
                continue
            hint = ("; this fold is marked speaker-dependent: pass allow_speaker_dependent=True only if "
                    "that was asked for explicitly")
        else:
            hint = ""
        leaked = sorted(spk["test"] & (spk["train"] | spk["validation"]))
        if leaked:
            raise LeakageError(
                f"fold {fold.name!r}: test speaker(s) {leaked} also appear in training/validation; "
                f"a speaker-independent split must keep each speaker on one side{hint}"
            )
        if fold.validation_mode == "speaker":
            leaked = sorted(spk["validation"] & spk["train"])
            if leaked:
                raise LeakageError(
                    f"fold {fold.name!r}: validation speaker(s) {leaked} also appear in training, but "
                    "validation_mode is 'speaker'; hold out whole speakers or mark the fold 'stratified'"
                )


def _duplicate_keys(manifest: pd.DataFrame) -> pd.DataFrame:
    """``utt_id``-indexed ``key`` and ``path`` of the rows whose audio also appears under another row.

    Empty when the manifest has no ``path`` column (nothing to compare).
    """
    from serray.duplicates import duplicate_audio

    dups = duplicate_audio(manifest)
    keys = dups.set_index("utt_id")[["group", "path"]].rename(columns={"group": "key"})
    if len(keys):
        log.info("leakage check: %d utterance(s) in %d group(s) share their audio with another row",
                 len(keys), keys["key"].nunique())
    return keys


def _check_shared_audio(fold: Fold, copies: pd.DataFrame) -> None:
    """Refuse test audio that is also in train or validation; warn about train/validation copies.

    Args:
        fold: The fold to check.
        copies: :func:`_duplicate_keys` of the manifest.

    Raises:
        LeakageError: One line naming the fold, example file pairs and the fix.
    """
    if copies.empty:
        return
    parts = {s: copies.loc[copies.index.intersection(pd.Index(fold.split(s).astype(str)))].rename_axis("utt_id")
             for s in SPLITS}
    for other in ("train", "validation"):
        pairs = parts["test"].reset_index().merge(parts[other].reset_index(), on="key", suffixes=("_test", "_other"))
        if pairs.empty:
            continue
        eg = "; ".join(f"test {r.utt_id_test} ({r.path_test}) = {other} {r.utt_id_other} ({r.path_other})"
                       for r in pairs.head(3).itertuples())
        raise LeakageError(
            f"fold {fold.name!r}: {pairs['utt_id_test'].nunique()} test utterance(s) have the same audio "
            f"(same file or identical bytes) as {other} utterances, e.g. {eg}; keep one copy of each file "
            "in the manifests (`serray data info W` lists the duplicates)"
        )
    shared = parts["train"].reset_index().merge(parts["validation"].reset_index(), on="key")
    if len(shared):
        log.warning("fold %s: %d validation utterance(s) have the same audio as training utterances, e.g. %s; "
                    "validation scores are optimistic (`serray data info W` lists duplicates)",
                    fold.name, shared["utt_id_y"].nunique(), shared["path_y"].iloc[0])


def check_fold_classes(
    manifest: pd.DataFrame,
    folds: Sequence[Fold],
    classes: Sequence[str] | None = None,
    label_column: str = "emotion",
) -> None:
    """Check that every fold can learn every class.

    A class missing from a fold's training part is an error; a class missing from its
    validation or test part is logged as a warning (UA then averages over the classes
    present).

    Args:
        manifest: Manifest with ``utt_id`` and ``label_column``.
        folds: Folds to check.
        classes: The experiment's classes; default: every value of ``label_column``.
        label_column: Column holding the labels.

    Raises:
        FoldClassError: Names the fold, the missing class(es) and the fix.
    """
    _require_columns(manifest, ("utt_id", label_column), "the class check")
    label_of = pd.Series(manifest[label_column].astype(str).to_numpy(), index=manifest["utt_id"].astype(str))
    wanted = sorted(set(label_of)) if classes is None else [str(c) for c in classes]
    for fold in folds:
        for split in SPLITS:
            ids = pd.Index(fold.split(split)).intersection(label_of.index)
            missing = sorted(set(wanted) - set(label_of.loc[ids]))
            if not missing:
                continue
            if split == "train":
                raise FoldClassError(
                    f"fold {fold.name!r}: training part has no utterances of class(es) {missing}; "
                    "use a label set without it, e.g. --labels 4class, or another protocol"
                )
            log.warning("fold %s: %s part has no utterances of class(es) %s; UA averages over the classes present",
                        fold.name, split, missing)


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
