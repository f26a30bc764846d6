"""Mini-batches of one fold part as model :class:`~serray.models.contract.Batch` objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from serray.models.contract import Batch
from serray.training.data import LazyRows, SplitData, concat_ranges

if TYPE_CHECKING:
    import torch

__all__ = ["PartBatches"]


class PartBatches:
    """Mini-batches of one fold part as :class:`~serray.models.contract.Batch` objects.

    A sample is an utterance, or a segment when the primary input is a segment stack (the
    other inputs then follow the segment's utterance). Vectors are one host tensor;
    frames and segments a :class:`LazyRows` view gathered (and normalised) per
    mini-batch; mini-batches move to the device.
    """

    def __init__(
        self, part: SplitData, kinds: Mapping[str, str], device: torch.device, aux_inputs: Sequence[str] = ()
    ) -> None:
        import torch

        self.kinds, self.device = dict(kinds), device
        self.aux_inputs = tuple(aux_inputs)
        self.primary = next(iter(self.kinds))
        self.n_utt, self.y_utt = len(part), part.y
        self.x: dict[str, Any] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for role, f in part.inputs.items():
            if f.kind == "segments" and role != self.primary:
                raise ValueError(f"input {role!r}: only the primary input may be segments")
            if f.kind == "vector":
                self.x[role] = torch.from_numpy(np.ascontiguousarray(f.data))
            else:
                self.x[role] = f if isinstance(f, LazyRows) else LazyRows(f.kind, f.data, np.arange(f.data.shape[0], dtype=np.int64), f.offsets)
                self.offsets[role] = f.offsets
        segments = self.kinds[self.primary] == "segments"
        self.owner = part.inputs[self.primary].row_owner() if segments else None
        self.y = part.y[self.owner] if segments else part.y
        self.aux = {r: (c[self.owner] if segments else c) for r, c in part.aux.items()}
        self.n = len(self.y)

    def _sequence(self, role: str, utts: np.ndarray, max_frames: int, rng: np.random.Generator) -> tuple:
        import torch

        starts, lengths = [], []
        offsets = self.offsets[role]
        for i in utts:
            a, b = int(offsets[i]), int(offsets[i + 1])
            if max_frames > 0 and b - a > max_frames:
                a += int(rng.integers(0, b - a - max_frames + 1))
                b = a + max_frames
            starts.append(a)
            lengths.append(b - a)
        frames = torch.from_numpy(self.x[role].gather(concat_ranges(starts, lengths)))
        x = torch.nn.utils.rnn.pad_sequence(frames.split(lengths), batch_first=True)
        return x.to(self.device, non_blocking=True), torch.tensor(lengths, dtype=torch.long).to(self.device)

    def batch(self, idx: np.ndarray, max_frames: int = 0, rng: np.random.Generator | None = None, labels: bool = True) -> Batch:
        """The samples ``idx``; ``max_frames > 0`` crops training sequences at random."""
        import torch

        idx = np.asarray(idx, dtype=np.int64)
        utts = idx if self.owner is None else self.owner[idx]
        inputs, lengths = {}, {}
        for role, kind in self.kinds.items():
            if kind == "segments":
                inputs[role] = torch.from_numpy(self.x[role].gather(idx)).to(self.device, non_blocking=True)
            elif kind == "vector":
                inputs[role] = self.x[role][torch.from_numpy(utts)].to(self.device, non_blocking=True)
            else:
                inputs[role], lengths[role] = self._sequence(role, utts, max_frames, rng)
        owner, n_utt = None, len(idx)
        if self.owner is not None:
            uniq, inverse = np.unique(utts, return_inverse=True)
            owner, n_utt = torch.from_numpy(inverse.astype(np.int64)).to(self.device), len(uniq)
        b = Batch(inputs, lengths, None, owner=owner, n_utterances=n_utt, primary=self.primary)
        if labels:
            self._labels(b, idx)
        else:
            self._aux(b, idx, self.aux_inputs)
        return b

    def _labels(self, b: Batch, idx: np.ndarray) -> None:
        import torch

        b.y = torch.from_numpy(self.y[idx]).to(self.device)
        self._aux(b, idx, tuple(self.aux))

    def _aux(self, b: Batch, idx: np.ndarray, roles: Sequence[str]) -> None:
        import torch

        for role in roles:
            if role not in self.aux:
                continue
            codes = self.aux[role]
            c = codes[idx]
            b.aux[role] = torch.from_numpy(np.maximum(c, 0)).to(self.device)
            b.aux_mask[role] = torch.from_numpy(c >= 0).to(self.device)

    def whole(self) -> Batch:
        """A batch without inputs that describes the whole part (for utterance logits)."""
        import torch

        owner = None if self.owner is None else torch.from_numpy(self.owner.astype(np.int64)).to(self.device)
        return Batch({}, {}, torch.from_numpy(self.y_utt).to(self.device), owner=owner, n_utterances=self.n_utt, primary=self.primary)
