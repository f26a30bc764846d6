"""Feature normalisation: z-scores per feature dimension, with training-part, speaker or utterance statistics.

The modes (``global``, ``speaker``, ``utterance``, ``none``) are described in
:mod:`serray.training.data`. Statistics are float64; a normalised copy and a
:class:`LazyRows` view (normalised per mini-batch) hold the same float32 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from serray.training.packing import PackedFeatures

__all__ = ["NORMALIZATIONS", "LazyRows", "normalize_features"]

Normalization = Literal["speaker", "global", "none"]
NORMALIZATIONS: tuple[str, ...] = ("speaker", "global", "utterance", "none")
_CHUNK = 4_000_000  # elements per chunk when accumulating statistics


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


def _own_groups(normalize: str, speakers: np.ndarray) -> tuple[str, np.ndarray]:
    """``utterance`` normalisation is ``speaker`` normalisation with every utterance its own
    group: the mode and group keys that :func:`_statistics` and friends then use."""
    if normalize != "utterance":
        return normalize, speakers
    return "speaker", np.array([f"utt{i}" for i in range(len(speakers))], dtype=object)
