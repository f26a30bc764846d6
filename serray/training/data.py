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
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

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

Normalization = Literal["speaker", "global", "none"]
NORMALIZATIONS: tuple[str, ...] = ("speaker", "global", "utterance", "none")
_KINDS = ("vector", "sequence", "segments")
_CHUNK = 4_000_000  # elements per chunk when accumulating statistics
#: Frame and segment folds whose normalised float32 copy takes at most this many bytes are
#: copied (a mini-batch is then a plain slice); larger ones are read through LazyRows.
COPY_MAX_BYTES = 64 * 2**20


def concat_ranges(starts: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without a loop (int64)."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.repeat(starts - before, counts) + np.arange(int(counts.sum()), dtype=np.int64)


@dataclass(frozen=True)
class PackedFeatures:
    """Features of ``N`` utterances in one contiguous array (see module docstring).

    Attributes:
        kind: ``"vector"``, ``"sequence"`` or ``"segments"``.
        data: The packed array (float32; sequences and segments keep the cache's float16
            when every utterance came as float16, which converts to float32 exactly).
        offsets: ``[N + 1]`` int64 row offsets per utterance, ``None`` for vectors.
        layers: How many layers the last axis concatenates (an ``ssl`` set loaded with
            ``layer="all"``), 1 otherwise; a run's model check reads it
            (:attr:`serray.models.contract.InputInfo.layers`).
    """

    kind: str
    data: np.ndarray
    offsets: np.ndarray | None
    layers: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"feature kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind == "vector":
            if self.data.ndim != 2 or self.offsets is not None:
                raise ValueError("vector features need data [N, D] and offsets=None")
        else:
            if self.offsets is None or self.offsets.ndim != 1 or self.offsets[-1] != self.data.shape[0]:
                raise ValueError(f"{self.kind} features need offsets [N + 1] ending at data.shape[0]")
            if self.kind == "sequence" and self.data.ndim != 2:
                raise ValueError(f"sequence features need frames [sum T, D], got shape {self.data.shape}")
            if self.kind == "segments" and self.data.ndim != 4:
                raise ValueError(f"segment features need [sum S, C, F, T], got shape {self.data.shape}")

    @property
    def n(self) -> int:
        """Number of utterances."""
        return self.data.shape[0] if self.offsets is None else len(self.offsets) - 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample without the batch axis: ``(D,)`` or ``(C, F, T)``."""
        return tuple(self.data.shape[1:])

    @property
    def counts(self) -> np.ndarray:
        """Rows per utterance (1 for vectors; frames or segments otherwise)."""
        if self.offsets is None:
            return np.ones(self.n, dtype=np.int64)
        return np.diff(self.offsets)

    def row_owner(self) -> np.ndarray:
        """Utterance index of every row of :attr:`data`."""
        return np.repeat(np.arange(self.n), self.counts)

    def rows_of(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row indices into :attr:`data` of the utterances ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.offsets is None:
            return idx
        return concat_ranges(self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx])

    def offsets_of(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Offsets ``[len(idx) + 1]`` of the utterances ``idx`` packed in that order (not for vectors)."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.offsets[idx + 1] - self.offsets[idx]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def take(self, idx: Sequence[int] | np.ndarray) -> "PackedFeatures":
        """The utterances ``idx`` (in that order) as a new packed array (a copy)."""
        idx = np.asarray(idx, dtype=np.int64)
        data = np.ascontiguousarray(self.data[self.rows_of(idx)], dtype=np.float32)
        return PackedFeatures(self.kind, data, None if self.offsets is None else self.offsets_of(idx))


@dataclass(frozen=True)
class LabelTable:
    """Per-utterance labels aligned with the packed features of a run.

    Attributes:
        utt_ids: Utterance ids ``[N]``.
        y: Class index per utterance ``[N]`` (into :attr:`classes`).
        speaker: Speaker per utterance ``[N]`` (used by speaker normalisation).
        classes: Class names in logit order.
        aux: Auxiliary-label role -> class index per utterance ``[N]`` (-1: unknown).
        aux_names: Role -> class names in index order.
        aux_columns: Role -> the manifest column (or ``a*b`` derivation) it came from.
        groups: Extra per-utterance grouping columns reported as per-group UA
            (``gender``, ``corpus`` when present).
    """

    utt_ids: np.ndarray
    y: np.ndarray
    speaker: np.ndarray
    classes: tuple[str, ...]
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    aux_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aux_columns: dict[str, str] = field(default_factory=dict)
    groups: dict[str, np.ndarray] | None = None

    @property
    def domain(self) -> np.ndarray | None:
        """Class indices of the ``domain`` role (``None`` without one)."""
        return self.aux.get("domain")

    @property
    def domains(self) -> tuple[str, ...]:
        """Class names of the ``domain`` role (empty without one)."""
        return self.aux_names.get("domain", ())

    def index_of(self, utt_ids: Iterable[str], what: str = "fold") -> np.ndarray:
        """Positions of ``utt_ids`` in this table.

        Raises:
            ValueError: An id that is not in the table (e.g. one without features).
        """
        ids = np.asarray(list(utt_ids), dtype=object)
        pos = pd.Index(self.utt_ids).get_indexer(ids)
        if (pos < 0).any():
            bad = ids[pos < 0][:3].tolist()
            raise ValueError(f"{what} names {int((pos < 0).sum())} utterance(s) without features/labels, e.g. {bad}")
        return pos.astype(np.int64)


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
    inputs: dict[str, Any]
    y: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def features(self) -> Any:
        """Features of the primary input."""
        return next(iter(self.inputs.values()))

    @property
    def domain(self) -> np.ndarray | None:
        """Class indices of the ``domain`` role (``None`` without one)."""
        return self.aux.get("domain")

    def __len__(self) -> int:
        return len(self.utt_ids)


@dataclass(frozen=True)
class LazyRows:
    """The rows of one fold part, read from a shared packed array (never copied whole).

    Rows are frames (``kind="sequence"``) or segments (``kind="segments"``).
    :meth:`gather` returns normalised float32 rows for a mini-batch, computed exactly as an
    eagerly normalised copy would hold them.

    Attributes:
        kind: ``"sequence"`` or ``"segments"``.
        source: The packed array of the whole corpus, frames ``[sum T, D]`` or segments
            ``[sum S, C, F, T]`` (may be a read-only view of Ray's object store; never
            modified).
        rows: Rows of ``source`` that form this part, in order (utterance by utterance).
        offsets: ``[n_utt + 1]`` offsets of each utterance's rows in ``rows``.
        stat_index: Statistics group of every row (``None``: no normalisation).
        mean, std: float64 statistics per group, ``[G, D]`` or ``[G, C, F, 1]`` (``None``
            without normalisation).
    """

    kind: str
    source: np.ndarray
    rows: np.ndarray
    offsets: np.ndarray
    stat_index: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of utterances."""
        return len(self.offsets) - 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(D,)`` or ``(C, F, T)``."""
        return tuple(self.source.shape[1:])

    @property
    def counts(self) -> np.ndarray:
        """Rows (frames or segments) per utterance."""
        return np.diff(self.offsets)

    def row_owner(self) -> np.ndarray:
        """Utterance index (within the part) of every row."""
        return np.repeat(np.arange(self.n), self.counts)

    def gather(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Normalised float32 rows ``idx`` (positions in this part), ``[len(idx), *sample_shape]``."""
        idx = np.asarray(idx, dtype=np.int64)
        x = self.source[self.rows[idx]]  # a new array
        if self.stat_index is None:
            return x.astype(np.float32, copy=False)
        if len(self.mean) == 1:  # one group (global): broadcast, no per-row statistics
            mean, std = self.mean[0], self.std[0]
        else:
            groups = self.stat_index[idx]
            mean, std = self.mean[groups], self.std[groups]
        # (x - mean) / std in float64, rounded once to float32: the eager copy's arithmetic
        x = x.astype(np.float64)
        x -= mean
        x /= std
        return x.astype(np.float32)


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


def pack_features(feature_set: Any, utt_ids: Sequence[str] | None = None) -> PackedFeatures:
    """Pack a feature set (``.kind``, ``.utt_ids``, ``.data``) into one array.

    Args:
        feature_set: An object like :class:`serray.features.FeatureSet`: ``kind`` is
            ``vector`` (``data`` ``[N, D]``), ``sequence`` (list of ``[T, D]``) or
            ``segments`` (list of ``[S, C, F, T]``).
        utt_ids: Order (and subset) of utterances to pack; default the feature set's.

    Raises:
        ValueError: Unknown kind, inconsistent shapes, or an id without features.
    """
    kind = feature_set.kind
    if kind not in _KINDS:
        raise ValueError(f"feature set kind must be one of {_KINDS}, got {kind!r}")
    have = list(feature_set.utt_ids)
    data = feature_set.data
    if len(data) != len(have):
        raise ValueError(f"feature set has {len(have)} utt_ids but {len(data)} feature entries")
    order = np.arange(len(have))
    if utt_ids is not None:
        wanted = np.asarray(list(utt_ids), dtype=object)
        order = pd.Index(have).get_indexer(wanted)
        if (order < 0).any():
            raise ValueError(f"{int((order < 0).sum())} utterance(s) have no features, e.g. {wanted[order < 0][:3].tolist()}")
    if kind == "vector":
        arr = np.asarray(data, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"vector features must be [N, D], got shape {arr.shape}")
        return PackedFeatures(kind, np.ascontiguousarray(arr[order]), None, int(getattr(feature_set, "layers", 1)))
    # Frames and segments stay float16 when the cache stored them so (exact in float32, half
    # the memory); fold parts read them through LazyRows, which normalises in float32.
    keep16 = all(np.asarray(data[i]).dtype == np.float16 for i in order)
    items = [np.asarray(data[i], dtype=np.float16 if keep16 else np.float32) for i in order]
    ndim = 2 if kind == "sequence" else 4
    shapes = {a.shape[1:] for a in items}
    if any(a.ndim != ndim for a in items) or len(shapes) > 1:
        raise ValueError(f"{kind} features must all be {ndim}-D with equal trailing shape, got {sorted(shapes)[:3]}")
    if any(a.shape[0] == 0 for a in items):
        raise ValueError(f"{kind} features contain an utterance with no frames/segments")
    counts = np.array([a.shape[0] for a in items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    packed = np.concatenate(items, axis=0) if items else np.zeros((0, *next(iter(shapes), ())), np.float32)
    return PackedFeatures(kind, np.ascontiguousarray(packed), offsets, int(getattr(feature_set, "layers", 1)))


def class_list(labels: Iterable[str]) -> list[str]:
    """Classes present in ``labels`` in :data:`serray.labels.LABEL_ORDER` (canonical, extra,
    valence bins), then any others, sorted."""
    from serray.labels import LABEL_ORDER

    present = set(labels)
    order = [c for c in LABEL_ORDER if c in present]
    return order + sorted(present - set(order))


def aux_values(manifest: pd.DataFrame, column: str) -> pd.Series:
    """Values of a manifest column, or of a derived ``a*b`` column (joined by ``x``), as strings.

    Unknown values (missing, empty, or ``unknown``) are ``None``; a derived value is
    unknown when any part is.

    Raises:
        ValueError: A column that is not in the manifest, naming the columns there.

    Example:
        >>> m = pd.DataFrame({"gender": ["f", "m", None], "corpus": ["emodb", "emovo", "emodb"]})
        >>> aux_values(m, "gender*corpus").tolist()
        ['fxemodb', 'mxemovo', None]
    """
    from serray.models.contract import derived_column_parts

    parts = derived_column_parts(column)
    missing = [c for c in parts if c not in manifest.columns]
    if not parts or missing:
        raise ValueError(
            f"label column {column!r}: {missing or column!r} not in the manifest (columns: {list(manifest.columns)}); "
            "name an existing column or a derived one like gender*corpus"
        )
    known = pd.Series(True, index=manifest.index)
    values = None
    for c in parts:
        col = manifest[c]
        text = col.astype(str)
        known &= col.notna() & ~text.str.strip().str.lower().isin(["", "unknown", "nan", "none"])
        values = text if values is None else values + "x" + text
    return values.astype(object).where(known, None)


def make_label_table(
    manifest: pd.DataFrame,
    classes: Sequence[str] | None = None,
    domain_column: str | None = None,
    group_columns: Sequence[str] = ("gender", "corpus"),
    aux_columns: Mapping[str, str] | None = None,
) -> LabelTable:
    """Integer labels (and auxiliary labels) for the rows of ``manifest``, in its order.

    Args:
        manifest: Manifest rows (``utt_id``, ``speaker``, ``emotion`` at least).
        classes: Class order; default :func:`class_list` of the emotions.
        domain_column: Shorthand for ``aux_columns={"domain": domain_column}``.
        group_columns: Columns kept for per-group UA when present.
        aux_columns: Auxiliary-label role -> manifest column (or ``a*b``); unknown
            values get index -1 (masked out of that loss).

    Raises:
        ValueError: A missing label column, or emotions outside ``classes``.
    """
    classes = tuple(classes) if classes is not None else tuple(class_list(manifest["emotion"]))
    lut = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(manifest["emotion"]) - set(lut))
    if unknown:
        raise ValueError(f"emotions {unknown} are not in the class list {list(classes)}")
    y = manifest["emotion"].map(lut).to_numpy(dtype=np.int64)
    columns = dict(aux_columns or {})
    if domain_column is not None:
        columns.setdefault("domain", domain_column)
    aux, names = {}, {}
    for role, column in columns.items():
        values = aux_values(manifest, column)
        names[role] = tuple(sorted(values.dropna().unique()))
        codes = {d: i for i, d in enumerate(names[role])}
        aux[role] = values.map(codes).fillna(-1).to_numpy(dtype=np.int64)
        n_unknown = int((aux[role] < 0).sum())
        if n_unknown:
            log.info("label %r (column %s) is unknown for %d of %d utterances; they are left out of its loss",
                     role, column, n_unknown, len(values))
    groups = {c: manifest[c].astype(str).to_numpy() for c in group_columns if c in manifest.columns}
    return LabelTable(
        utt_ids=manifest["utt_id"].astype(str).to_numpy(dtype=object),
        y=y,
        speaker=manifest["speaker"].astype(str).to_numpy(dtype=object),
        classes=classes,
        aux=aux,
        aux_names=names,
        aux_columns=columns,
        groups=groups,
    )


def _stat_axes(kind: str) -> tuple[int, ...]:
    # Rows are utterances (vector), frames (sequence) or segments; segments also pool time.
    return (0, 3) if kind == "segments" else (0,)


def _moments(data: np.ndarray, rows: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, broadcastable to one row) over the selected ``rows``."""
    axes = _stat_axes(kind)
    shape = [1] + list(data.shape[1:])
    for a in axes[1:]:
        shape[a] = 1
    total = np.zeros(shape, dtype=np.float64)
    total_sq = np.zeros(shape, dtype=np.float64)
    per_row = int(np.prod(data.shape[1:])) or 1
    step = max(1, _CHUNK // per_row)
    count = 0
    for start in range(0, len(rows), step):
        block = data[rows[start : start + step]].astype(np.float64)
        total += block.sum(axis=axes, keepdims=True)
        total_sq += np.square(block).sum(axis=axes, keepdims=True)
        count += block.shape[0] * (block.shape[3] if kind == "segments" else 1)
    if count == 0:
        raise ValueError("cannot compute normalisation statistics from zero rows")
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-8] = 1.0
    return mean, std


def _apply(data: np.ndarray, rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """In place: ``data[rows] = (data[rows] - mean) / std`` in chunks."""
    per_row = int(np.prod(data.shape[1:])) or 1
    step = max(1, _CHUNK // per_row)
    contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows) and bool((np.diff(rows) == 1).all())
    for start in range(0, len(rows), step):
        if contiguous:  # a slice: no gather/scatter copies (same arithmetic)
            block = data[rows[0] + start : rows[0] + min(start + step, len(rows))]
            block[...] = (block - mean) / std
        else:
            r = rows[start : start + step]
            data[r] = ((data[r] - mean) / std).astype(np.float32)


def _statistics(
    packed: PackedFeatures, speakers: np.ndarray, stat_idx: np.ndarray, mode: str
) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """``{None: global stats}`` or ``{speaker: stats}`` computed from ``packed``."""
    if mode == "global":
        if len(stat_idx) == 0:
            raise ValueError("global normalisation needs at least one training utterance")
        return {None: _moments(packed.data, packed.rows_of(stat_idx), packed.kind)}
    out = {}
    for spk in pd.unique(speakers[stat_idx]):
        out[spk] = _moments(packed.data, packed.rows_of(stat_idx[speakers[stat_idx] == spk]), packed.kind)
    return out


def _normalize_part(part: PackedFeatures, speakers: np.ndarray, stats: dict, mode: str) -> None:
    """Normalise a packed copy in place with precomputed statistics."""
    if mode == "global":
        _apply(part.data, np.arange(part.data.shape[0]), *stats[None])
        return
    for spk in pd.unique(speakers):
        _apply(part.data, part.rows_of(np.flatnonzero(speakers == spk)), *stats[spk])


def normalize_features(
    packed: PackedFeatures,
    speakers: np.ndarray,
    train_mask: np.ndarray,
    mode: str,
) -> PackedFeatures:
    """Z-normalise packed features (see the module docstring for the three modes).

    Args:
        packed: Features of ``N`` utterances.
        speakers: Speaker of each utterance ``[N]`` (used by ``speaker``).
        train_mask: Boolean ``[N]``: the utterances whose statistics ``global`` uses.
        mode: ``"speaker"``, ``"global"`` or ``"none"``.

    Returns:
        A new :class:`PackedFeatures` (the input is never modified; ``none`` returns it).

    Raises:
        ValueError: Unknown mode, mismatched lengths, or an empty training mask.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {mode!r}")
    speakers = np.asarray(speakers).astype(str)
    train_mask = np.asarray(train_mask, dtype=bool)
    if len(speakers) != packed.n or len(train_mask) != packed.n:
        raise ValueError(f"speakers ({len(speakers)}) and train_mask ({len(train_mask)}) must have {packed.n} entries")
    if mode == "none":
        return packed
    if mode == "utterance" and packed.kind == "vector":
        mode = "global"
    mode, speakers = _own_groups(mode, speakers)
    stat_idx = np.flatnonzero(train_mask) if mode == "global" else np.arange(packed.n)
    stats = _statistics(packed, speakers, stat_idx, mode)
    out = packed.take(np.arange(packed.n))
    _normalize_part(out, speakers, stats, mode)
    return out


def _lazy_rows(
    packed: PackedFeatures, idx: np.ndarray, speakers: np.ndarray, stats: dict | None, mode: str
) -> LazyRows:
    """A lazily normalised view of the utterances ``idx`` of packed frames or segments."""
    offsets = packed.offsets_of(idx)
    rows = packed.rows_of(idx)
    if stats is None:
        return LazyRows(packed.kind, packed.data, rows, offsets)
    keys = list(stats)
    if mode == "global":
        group_of_utt = np.zeros(len(idx), dtype=np.int32)
    else:
        pos = {k: i for i, k in enumerate(keys)}
        group_of_utt = np.array([pos[s] for s in speakers], dtype=np.int32)
    mean = np.concatenate([stats[k][0] for k in keys])  # each [1, D] or [1, C, F, 1] -> [G, ...]
    std = np.concatenate([stats[k][1] for k in keys])
    return LazyRows(packed.kind, packed.data, rows, offsets, np.repeat(group_of_utt, np.diff(offsets)), mean, std)


def _fold_parts(table: LabelTable, fold: Any) -> dict[str, np.ndarray]:
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


def _own_groups(normalize: str, speakers: np.ndarray) -> tuple[str, np.ndarray]:
    """``utterance`` normalisation is ``speaker`` normalisation with every utterance its own
    group: the mode and group keys that :func:`_statistics` and friends then use."""
    if normalize != "utterance":
        return normalize, speakers
    return "speaker", np.array([f"utt{i}" for i in range(len(speakers))], dtype=object)


def _part_features(
    packed: PackedFeatures, parts: dict[str, np.ndarray], speakers: np.ndarray, normalize: str, lazy: bool | None
) -> dict[str, Any]:
    """One input's features of every part: normalised copies or :class:`LazyRows` views."""
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
    return out


def _role_mode(normalize: str, kind: str, reads_speakers: bool) -> str:
    """The normalisation of one input: ``global`` for an input whose speaker differences the
    model reads under ``speaker``, and for utterance vectors under ``utterance``."""
    if (normalize == "speaker" and reads_speakers) or (normalize == "utterance" and kind == "vector"):
        return "global"
    return normalize


def build_fold_data(
    packed: PackedFeatures | Mapping[str, PackedFeatures],
    table: LabelTable,
    fold: Any,
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
    features = {role: _part_features(p, parts, speakers, modes[role], lazy) for role, p in inputs.items()}
    splits = {
        part: SplitData(
            utt_ids=table.utt_ids[idx],
            inputs={role: features[role][part] for role in inputs},
            y=table.y[idx],
            aux={role: codes[idx] for role, codes in table.aux.items()},
        )
        for part, idx in parts.items()
    }
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
    )
