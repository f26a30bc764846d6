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

Where the parts live: :mod:`serray.protocols.folds` (:class:`Fold`, the vocabulary and
the fold table), :mod:`serray.protocols.partition` (:func:`make_folds`),
:mod:`serray.protocols.validation` (the carve-out) and :mod:`serray.protocols.leakage`
(the guard); every public name is importable from ``serray.protocols``.

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

from serray.protocols.folds import (  # noqa: F401 (PREDEFINED_*: importable as before)
    PREDEFINED_TRAIN,
    PREDEFINED_VALIDATION,
    PROTOCOLS,
    SPEAKER_DEPENDENT_PROTOCOL,
    SPLITS,
    VALIDATION_MODES,
    VALIDATION_RULES,
    Fold,
    folds_from_frame,
    folds_to_frame,
)
from serray.protocols.leakage import FoldClassError, LeakageError, check_copies, check_fold_classes, check_leakage
from serray.protocols.partition import make_folds

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
    "check_copies",
    "folds_to_frame",
    "folds_from_frame",
]
