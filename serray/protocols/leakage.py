"""The leakage guard: folds that leak speakers or audio into evaluation, or lack a class, are refused."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from serray.protocols.folds import SPLITS, Fold, _require_columns

__all__ = ["LeakageError", "FoldClassError", "check_leakage", "check_fold_classes", "check_copies"]

log = logging.getLogger(__name__)


class LeakageError(ValueError):
    """A fold whose test (or validation) speakers or audio also appear in its training data."""


class FoldClassError(ValueError):
    """A fold whose training part lacks a class of the experiment."""


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



def check_copies(fold: Any, utt_ids: Sequence[str], copy_of: Sequence[str | None] | None, speakers: Sequence[str]) -> None:
    """Refuse augmented copies (:mod:`serray.training.wave`) that could leak into evaluation.

    A copy may only be in the training part of a fold whose training part holds its source
    utterance; and (speaker-independent folds) its speaker, its source's, is no test
    speaker. Copies are rows of the run's label table: ``utt_ids``, their ``copy_of``
    (source utterance, ``None`` for corpus utterances) and ``speakers``.

    Raises:
        LeakageError: Names the fold, the part and example copies.
    """
    if copy_of is None:
        return
    source = pd.Series(list(copy_of), index=pd.Index(list(utt_ids), dtype=object), dtype=object)
    speaker = pd.Series(list(speakers), index=source.index, dtype=object)
    copies = source[source.notna()]
    for part in ("validation", "test"):
        inside = copies.index.intersection(pd.Index(fold.split(part) if hasattr(fold, "split") else getattr(fold, part)))
        if len(inside):
            raise LeakageError(f"fold {fold.name!r}: {len(inside)} augmented copies in the {part} part, e.g. "
                               f"{list(inside[:3])}; copies only ever enter training")
    train = pd.Index(np.asarray(fold.train, dtype=object))
    in_train = copies[copies.index.isin(train)]
    stray = in_train[~in_train.isin(train)]
    if len(stray):
        raise LeakageError(f"fold {fold.name!r}: training holds copies of utterances outside its training part, e.g. "
                           f"{list(stray.index[:3])} of {list(stray.iloc[:3])}; a copy trains only with its source")
    if getattr(fold, "validation_mode", "speaker") == "speaker-dependent":
        return
    test_speakers = set(speaker.reindex(pd.Index(np.asarray(fold.test, dtype=object))).dropna())
    leaked = sorted(set(speaker.loc[in_train.index]) & test_speakers)
    if leaked:
        raise LeakageError(f"fold {fold.name!r}: augmented copies of test speaker(s) {leaked} are in training")
