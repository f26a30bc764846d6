"""Partitioning: a manifest into the folds of a protocol (:func:`make_folds`)."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any, Sequence

import numpy as np
import pandas as pd

from serray.protocols.folds import (
    PREDEFINED_TRAIN,
    PREDEFINED_VALIDATION,
    PROTOCOLS,
    SPEAKER_DEPENDENT_PROTOCOL,
    VALIDATION_RULES,
    Fold,
    _require_columns,
)
from serray.protocols.leakage import check_leakage
from serray.protocols.validation import carve_validation

__all__ = ["make_folds"]

log = logging.getLogger(__name__)

_DEFAULT_GROUP = {"loso": "speaker", "loso-session": "session", "loco": "corpus", "kfold": "speaker"}


def _as_list(value: str | Sequence[str] | None, arg: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError(f"{arg} is empty; name at least one corpus")
    return [str(v) for v in items]



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
        val_fraction: The share held out: of the training utterances (``coverage``, ``balanced``),
            of the training speakers (``fraction``), of each class (stratified mode);
            ``0 < val_fraction < 1``, default 0.15 (0.2 for ``kfold-speaker-dependent``).
        min_val_speakers: Lower bound on the number of validation speakers.
        validation: One of :data:`VALIDATION_RULES` (described there): ``coverage``
            (default), ``balanced`` or ``fraction`` (the rule before 2026-12: one
            speaker per EmoDB LOSO fold).
        train_corpora, test_corpora: Training and test corpora for ``cross-corpus``.
        speaker_independent: ``False`` (``kfold`` only) gives plain stratified k-fold;
            its folds are named and marked ``speaker-dependent`` (optimistic results).
        group_column: Column whose values define the test groups; defaults to
            ``speaker`` (loso, kfold), ``session`` (loso-session), ``corpus`` (loco),
            ``split`` (split).

    Protocol ``split``: see :func:`_predefined_folds`.

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
    protocol, speaker_independent, val_fraction = _normalise_protocol(
        protocol, speaker_independent, val_fraction, validation, min_val_speakers,
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
    parts = _protocol_parts(m, protocol, int(k), int(seed), speaker_independent, group_column, train_list, test_list)
    folds: list[Fold] = _predefined_folds(m, group_column or "split", common) if protocol == "split" else []
    folds += _carve_folds(m, parts, common, speaker_independent)
    _check_folds(m, folds, protocol, speaker_independent)
    return folds


def _carve_folds(
    m: pd.DataFrame, parts: list[tuple[str, np.ndarray, np.ndarray]], common: dict[str, Any],
    speaker_independent: bool,
) -> list[Fold]:
    """One :class:`Fold` per ``(name, train mask, test mask)``, validation carved out of training."""
    ids = m["utt_id"].to_numpy()
    folds: list[Fold] = []
    used = Counter() if common["validation"] == "balanced" else None  # folds each speaker validated so far
    for index, (name, train_mask, test_mask) in enumerate(parts):
        tr, va, mode = carve_validation(
            m, train_mask, fold_index=index, fold_name=name,
            speaker_dependent=not speaker_independent, used=used, **common,
        )
        folds.append(Fold(index=index, name=name, train=tr, validation=va, test=ids[test_mask],
                          validation_mode=mode))
    return folds


def _normalise_protocol(
    protocol: str, speaker_independent: bool, val_fraction: float | None, validation: str,
    min_val_speakers: int,
) -> tuple[str, bool, float]:
    """Check :func:`make_folds`' arguments; ``(protocol, speaker_independent, val_fraction)`` resolved."""
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
    return protocol, speaker_independent, val_fraction


def _protocol_parts(
    m: pd.DataFrame, protocol: str, k: int, seed: int, speaker_independent: bool, group_column: str | None,
    train_list: list[str] | None, test_list: list[str] | None,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, train mask, test mask)`` per fold (none for ``split``: :func:`_predefined_folds`)."""
    if protocol in ("loso", "loso-session", "loco"):
        col = group_column or _DEFAULT_GROUP[protocol]
        if col == "corpus":
            _require_columns(m, ("corpus",), f"protocol {protocol!r}")
        return [(f"test={value}", ~test_mask, test_mask) for value, test_mask in _test_groups(m, protocol, col)]
    if protocol == "kfold":
        return _kfold_parts(m, k, seed, speaker_independent, group_column or "speaker")
    if protocol == "cross-corpus":
        return [_cross_corpus_part(m, train_list, test_list)]
    return []


def _check_folds(m: pd.DataFrame, folds: list[Fold], protocol: str, speaker_independent: bool) -> None:
    """Coverage (each utterance tested once, where the protocol promises it) and the leakage guard."""
    if protocol not in ("cross-corpus", "split"):
        counts = Counter(u for f in folds for u in f.test)
        if len(counts) != len(m) or max(counts.values()) != 1:
            raise RuntimeError(f"protocol {protocol!r}: test parts do not cover each utterance exactly once")
    if not speaker_independent:
        log.warning(
            "kfold with speaker_independent=False: the same speakers appear in training and test; "
            "results are optimistic and not comparable with speaker-independent numbers"
        )
    check_leakage(m, folds, allow_speaker_dependent=not speaker_independent)
    log.info("protocol %s: %d fold(s) over %d utterances, %d speakers", protocol, len(folds), len(m),
             m["speaker"].nunique())


def _predefined_folds(m: pd.DataFrame, column: str, common: dict[str, Any]) -> list[Fold]:
    """Protocol ``split``: one fold per test partition of ``column``.

    Protocol ``split`` reads predefined partitions from the ``split`` column (values
    compared case-insensitively): ``train`` is the training part, ``development`` (or
    ``dev``/``validation``) the validation part, and each other value a test partition,
    one fold each (``test=test1``, ``test=test2``, ...; the folds share training and
    validation). Utterances without a value are left out. Without a development
    partition, validation is carved out of ``train`` as for the other protocols. The
    leakage check applies as everywhere: a test speaker in training is refused.
    """
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
        tr, va, mode = carve_validation(m, train, fold_index=0, fold_name="split", speaker_dependent=False, **common)
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

