"""Packed features: the features of every utterance of a run in one contiguous array.

* ``vector``: ``data`` is ``[N, D]``; ``offsets`` is ``None``.
* ``sequence``: the ``[T_i, D]`` frame matrices are stacked to ``[sum T_i, D]``;
  utterance ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
* ``segments``: the ``[S_i, C, F, T]`` segment stacks are stacked to
  ``[sum S_i, C, F, T]``; utterance ``i`` owns rows ``offsets[i]:offsets[i + 1]``.

One array goes to Ray's object store once and is read zero-copy by every fold actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from serray.features import FeatureSet

__all__ = ["PackedFeatures", "pack_features", "concat_ranges"]

_KINDS = ("vector", "sequence", "segments")


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


def pack_features(feature_set: FeatureSet, utt_ids: Sequence[str] | None = None) -> PackedFeatures:
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
