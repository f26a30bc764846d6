"""Fold data: packed feature arrays, integer labels and feature normalisation.

Features of all utterances are *packed* into one contiguous array so they can go to
Ray's object store once and be read zero-copy by every fold actor:

* ``vector``: ``data`` is ``[N, D]``; ``offsets`` is ``None``.
* ``sequence``: the ``[T_i, D]`` frame matrices are stacked to ``[sum T_i, D]``;
  utterance ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
* ``segments``: the ``[S_i, C, F, T]`` segment stacks are stacked to
  ``[sum S_i, C, F, T]``; utterance ``i`` owns rows ``offsets[i]:offsets[i + 1]``.

Normalisation (z-scores, per feature dimension; for sequences over all frames, for
segments per ``(channel, frequency)`` bin over segments and time):

* ``global``: mean and standard deviation of the *training part* of the fold only,
  applied to every part.
* ``speaker``: every speaker, training, validation and test speakers alike, is
  normalised with the statistics of all of that speaker's own utterances. This is the
  standard unsupervised speaker normalisation of SER work: it uses no labels, but it does
  read a test speaker's (unlabelled) features, so results assume that a few utterances of
  a new speaker are available before that speaker is scored. An input whose speaker
  differences the model reads (``global_roles`` of :func:`build_fold_data`, from
  ``InputSpec.speaker_norm``; e.g. NHNN's clustering input) is standardised as ``global``.
* ``utterance``: frames (and segments) of every utterance standardised with that
  utterance's own statistics over time (cepstral mean and variance normalisation per
  utterance); it reads nothing of any other utterance, so it is not transductive.
  Utterance vectors (one row: no statistics of their own) are standardised as ``global``.
* ``none``: features as extracted.

Dimensions with (near) zero spread get a standard deviation of 1.

Memory: vector parts (one row per utterance, small) are copied out of the packed array
and normalised once, and so are frame and segment folds whose float32 copy is small
(at most :data:`COPY_MAX_BYTES`, e.g. log-mel of an acted corpus). Larger frame and
segment folds (SSL layer frames or spectrogram stacks of a corpus) are not copied:
:class:`LazyRows` keeps the shared array, the part's row indices and the statistics, and
normalises each mini-batch as it is gathered, with the same arithmetic, so the values are
identical. A fold actor hosting several folds then holds one copy of the corpus (the
object store's, shared by every actor on the node, in the cache's float16 when the
extractor stored float16) instead of one float32 copy per fold. The price: a mini-batch
of 5,000 frames of 40 values takes 0.5 ms (global) or 0.7 ms (speaker normalisation)
longer to assemble than from a copy, against about 6 ms for a forward and backward pass
of ``dcnn`` preset ``small`` (one core).

Where the parts live: packing in :mod:`serray.training.packing`, labels in
:mod:`serray.training.label_table`, normalisation (and :class:`LazyRows`) in
:mod:`serray.training.normalization`; this module assembles a fold
(:func:`build_fold_data`) and re-exports the others' public names.

Example:
    >>> import numpy as np
    >>> packed = PackedFeatures("vector", np.array([[1.0], [3.0], [5.0]], dtype=np.float32), None)
    >>> out = normalize_features(packed, speakers=np.array(["a", "a", "b"]),
    ...                          train_mask=np.array([True, True, False]), mode="global")
    >>> out.data[:, 0].tolist()
    [-1.0, 1.0, 3.0]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from serray.training.label_table import LabelTable, aux_values, class_list, make_label_table
from serray.training.normalization import (
    NORMALIZATIONS,
    LazyRows,
    Normalization,  # noqa: F401 (importable from here as before)
    _lazy_rows,
    _normalize_part,
    _own_groups,
    _statistics,
    normalize_features,
)
from serray.training.packing import PackedFeatures, concat_ranges, pack_features

if TYPE_CHECKING:
    from serray.protocols import Fold

__all__ = [
    "NORMALIZATIONS",
    "COPY_MAX_BYTES",
    "PackedFeatures",
    "LabelTable",
    "TrainingInputs",
    "SplitData",
    "LazyRows",
    "FoldData",
    "pack_features",
    "make_label_table",
    "aux_values",
    "class_list",
    "normalize_features",
    "build_fold_data",
    "concat_ranges",
]

log = logging.getLogger(__name__)

#: Frame and segment folds whose normalised float32 copy takes at most this many bytes are
#: copied (a mini-batch is then a plain slice); larger ones are read through LazyRows.
COPY_MAX_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TrainingInputs:
    """Packed features of every input role and their labels, row-aligned.

    ``packed`` may be one :class:`PackedFeatures` (stored under the role ``"x"``) or a
    mapping role -> :class:`PackedFeatures`; the first role is the primary input.
    """

    packed: Any
    table: LabelTable

    def __post_init__(self) -> None:
        if isinstance(self.packed, PackedFeatures):
            object.__setattr__(self, "packed", {"x": self.packed})
        if not self.packed:
            raise ValueError("training inputs need at least one feature role")
        for role, p in self.packed.items():
            if p.n != len(self.table.utt_ids):
                raise ValueError(f"features {role!r} have {p.n} utterances but the label table {len(self.table.utt_ids)}")


@dataclass(frozen=True)
class SplitData:
    """One part (train, validation or test) of a fold, normalised.

    Attributes:
        utt_ids: Utterance ids of the part.
        inputs: Role -> features (a packed copy or a :class:`LazyRows` view); the first
            role is the primary input.
        y: Emotion class per utterance.
        aux: Auxiliary-label role -> class index per utterance (-1: unknown).
    """

    utt_ids: np.ndarray
    inputs: dict[str, PackedFeatures | LazyRows]
    y: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def features(self) -> PackedFeatures | LazyRows:
        """Features of the primary input."""
        return next(iter(self.inputs.values()))

    @property
    def domain(self) -> np.ndarray | None:
        """Class indices of the ``domain`` role (``None`` without one)."""
        return self.aux.get("domain")

    def __len__(self) -> int:
        return len(self.utt_ids)


@dataclass(frozen=True)
class FoldData:
    """Everything a fold trainer needs.

    Attributes:
        index: Fold number.
        name: Fold name (e.g. the test speaker).
        train, validation, test: The three parts.
        classes: Class names in logit order.
        aux_names: Auxiliary-label role -> class names.
        kinds: Input role -> feature kind (the first role is the primary input).
        normalize: Normalisation used.
        norm_stats: Input role -> ``{"mode": ..., "mean": ..., "std": ...}``: the
            normalisation each input got (``global``: the training part's float64
            statistics; ``speaker``/``utterance``/``none``: ``mean``/``std`` ``None``, the
            statistics being each test speaker's or utterance's own). Kept with a fold's
            model (:mod:`serray.artifacts`).
    """

    index: int
    name: str
    train: SplitData
    validation: SplitData
    test: SplitData
    classes: tuple[str, ...]
    aux_names: dict[str, tuple[str, ...]]
    kinds: dict[str, str]
    normalize: str
    norm_stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        """Role of the primary input."""
        return next(iter(self.kinds))

    @property
    def kind(self) -> str:
        """Feature kind of the primary input."""
        return self.kinds[self.primary]

    @property
    def domains(self) -> tuple[str, ...]:
        """Class names of the ``domain`` role (empty without one)."""
        return self.aux_names.get("domain", ())

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample of the primary input (see :attr:`PackedFeatures.sample_shape`)."""
        return self.train.features.sample_shape

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Sample shape of every input role."""
        return {role: f.sample_shape for role, f in self.train.inputs.items()}


def _fold_parts(table: LabelTable, fold: Fold) -> dict[str, np.ndarray]:
    """Positions in ``table`` of the fold's train, validation and test utterances (checked)."""
    parts = {}
    for part in ("train", "validation", "test"):
        ids = getattr(fold, part)
        parts[part] = table.index_of(ids if ids is not None else [], what=f"fold {fold.name!r} {part} part")
    if len(parts["train"]) == 0:
        raise ValueError(f"fold {fold.name!r} has an empty training part")
    all_idx = np.concatenate(list(parts.values()))
    if len(np.unique(all_idx)) != len(all_idx):
        raise ValueError(f"fold {fold.name!r}: an utterance appears in more than one of train/validation/test")
    return parts


def _part_features(
    packed: PackedFeatures, parts: dict[str, np.ndarray], speakers: np.ndarray, normalize: str, lazy: bool | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One input's features of every part (normalised copies or :class:`LazyRows` views) and
    its normalisation (``FoldData.norm_stats`` entry)."""
    role_mode = normalize
    normalize, speakers = _own_groups(normalize, speakers)
    all_idx = np.concatenate(list(parts.values()))
    stats = None
    if normalize != "none":
        stats = _statistics(packed, speakers, parts["train"] if normalize == "global" else all_idx, normalize)
    if packed.kind == "vector":
        lazy = False
    elif lazy is None:
        rows = int(packed.counts[all_idx].sum())
        lazy = rows * int(np.prod(packed.sample_shape)) * 4 > COPY_MAX_BYTES
    out = {}
    for part, idx in parts.items():
        if lazy:
            out[part] = _lazy_rows(packed, idx, speakers[idx], stats, normalize)
        else:
            out[part] = packed.take(idx)
            if stats is not None:
                _normalize_part(out[part], speakers[idx], stats, normalize)
    mean, std = stats[None] if normalize == "global" and stats is not None else (None, None)
    return out, {"mode": role_mode, "mean": mean, "std": std}


def _role_mode(normalize: str, kind: str, reads_speakers: bool) -> str:
    """The normalisation of one input: ``global`` for an input whose speaker differences the
    model reads under ``speaker``, and for utterance vectors under ``utterance``."""
    if (normalize == "speaker" and reads_speakers) or (normalize == "utterance" and kind == "vector"):
        return "global"
    return normalize


def build_fold_data(
    packed: PackedFeatures | Mapping[str, PackedFeatures],
    table: LabelTable,
    fold: Fold,
    normalize: str = "global",
    lazy: bool | None = None,
    global_roles: Sequence[str] = (),
) -> FoldData:
    """Assemble one fold: select its utterances, normalise every input, split into parts.

    Memory: parts are copied once from ``packed`` (which may be a read-only view of Ray's
    object store) and normalised in place, or, for large frame and segment folds, are
    :class:`LazyRows` views normalised per mini-batch (the same values; see the module
    docstring).

    Args:
        packed: Features of every utterance of ``table`` (same order): one
            :class:`PackedFeatures` (role ``"x"``) or role -> :class:`PackedFeatures`.
        table: Labels of those utterances.
        fold: A fold with ``index``, ``name``, ``train``, ``validation`` and ``test``
            (arrays of utt_id), e.g. :class:`serray.protocols.Fold`.
        normalize: ``"speaker"``, ``"global"``, ``"utterance"`` or ``"none"``, applied to
            every input; statistics for ``global`` come from the fold's training part only,
            for ``speaker`` from each speaker's utterances in the fold, for ``utterance``
            from each utterance's own frames (vectors: ``global``).
        lazy: Frames and segments only: ``True`` for views, ``False`` for copies,
            ``None`` to copy when the fold's float32 copy takes at most
            :data:`COPY_MAX_BYTES`. Vectors are always copied.
        global_roles: Input roles that ``speaker`` normalisation standardises with the
            training part's statistics instead (``global``): inputs whose speaker
            differences the model reads (``InputSpec.speaker_norm`` false).

    Raises:
        ValueError: Mismatched lengths, an empty training part, an utterance in two
            parts, or ids that are not in ``table``.
    """
    inputs = {"x": packed} if isinstance(packed, PackedFeatures) else dict(packed)
    for role, p in inputs.items():
        if p.n != len(table.utt_ids):
            raise ValueError(f"features {role!r} have {p.n} utterances but the label table {len(table.utt_ids)}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    parts = _fold_parts(table, fold)
    speakers = np.asarray(table.speaker).astype(str)
    modes = {role: _role_mode(normalize, p.kind, role in global_roles) for role, p in inputs.items()}
    if modes != {role: normalize for role in inputs}:
        log.debug("fold %s: inputs %s standardised globally (speaker differences read, or utterance vectors)",
                  fold.name, [r for r, m in modes.items() if m != normalize])
    built = {role: _part_features(p, parts, speakers, modes[role], lazy) for role, p in inputs.items()}
    features = {role: b[0] for role, b in built.items()}
    splits = _split_data(table, parts, features)
    return FoldData(
        index=int(fold.index),
        name=str(fold.name),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        classes=tuple(table.classes),
        aux_names=dict(table.aux_names),
        kinds={role: p.kind for role, p in inputs.items()},
        normalize=normalize,
        norm_stats={role: b[1] for role, b in built.items()},
    )


def _split_data(
    table: LabelTable, parts: dict[str, np.ndarray], features: dict[str, dict[str, Any]]
) -> dict[str, SplitData]:
    """Part name -> :class:`SplitData` from the parts' table positions and every input's part features."""
    return {
        part: SplitData(
            utt_ids=table.utt_ids[idx],
            inputs={role: features[role][part] for role in features},
            y=table.y[idx],
            aux={role: codes[idx] for role, codes in table.aux.items()},
        )
        for part, idx in parts.items()
    }
