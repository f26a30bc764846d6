"""On-the-fly augmentation of training batches: SpecAugment-style time and frequency masking.

Training keys (all off by default; a config that sets none of them trains exactly as
before, with the same random draws):

- ``time_masks``: masks per sample along time (frames); each is ``0..time_mask_width``
  frames wide (``time_mask_width``, default 20), placed inside the sample's own length.
- ``freq_masks``: masks per sample along the feature (frequency) axis; each is
  ``0..freq_mask_width`` bins wide (``freq_mask_width``, default 8).

Masked values are set to 0, the training mean once features are normalised. Only frame
inputs (sequences ``[B, T, F]`` and segment stacks ``[B, C, F, T]``) are masked; utterance
vectors are left alone. Masks are drawn from the fold trainer's seeded generator, per
sample and per input, and only for the training part's mini-batches: validation, test and
refit scoring never see them (Park et al., 2019, "SpecAugment").

Example:
    >>> import numpy as np, torch
    >>> x = torch.ones(2, 10, 4)
    >>> keys = check_augment({"time_masks": 1, "time_mask_width": 3, "freq_masks": 1, "freq_mask_width": 2})
    >>> y = mask_batch({"mfb": x}, {"mfb": torch.tensor([10, 6])}, {"mfb": "sequence"}, keys, np.random.default_rng(0))
    >>> bool((y["mfb"] == 0).any()), bool(x.eq(1).all())  # masked copy; the input is not modified
    (True, True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["AUGMENT_DEFAULTS", "check_augment", "augment_enabled", "mask_batch"]

#: The augmentation training keys and their defaults (masks off).
AUGMENT_DEFAULTS: dict[str, int] = {"time_masks": 0, "time_mask_width": 20, "freq_masks": 0, "freq_mask_width": 8}


def check_augment(config: Mapping[str, Any]) -> dict[str, int]:
    """The augmentation keys of ``config`` (defaults filled), checked.

    Raises:
        ValueError: A negative or non-integer count or width, naming the key.
    """
    out = {}
    for key, default in AUGMENT_DEFAULTS.items():
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0 (augmentation: masks per sample or their maximum width), "
                             f"got {value!r}")
        out[key] = int(value)
    return out


def augment_enabled(keys: Mapping[str, int]) -> bool:
    """Whether any mask is drawn (counts and widths above 0)."""
    return (keys["time_masks"] > 0 and keys["time_mask_width"] > 0) or (keys["freq_masks"] > 0 and keys["freq_mask_width"] > 0)


def _spans(n: int, length: int, width: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` spans ``[start, stop)`` of ``0..width`` steps inside ``0..length``."""
    spans = []
    for _ in range(n):
        w = int(rng.integers(0, min(width, length) + 1))
        start = int(rng.integers(0, length - w + 1))
        spans.append((start, start + w))
    return spans


def _mask_sample(x: torch.Tensor, length: int, time_axis: int, freq_axis: int, keys: Mapping[str, int],
                 rng: np.random.Generator) -> None:
    """Zero time and frequency spans of one sample in place (``x`` without its batch axis)."""
    for a, b in _spans(keys["time_masks"], length, keys["time_mask_width"], rng):
        x.narrow(time_axis, a, b - a).zero_()
    for a, b in _spans(keys["freq_masks"], x.shape[freq_axis], keys["freq_mask_width"], rng):
        x.narrow(freq_axis, a, b - a).zero_()


def mask_batch(inputs: Mapping[str, torch.Tensor], lengths: Mapping[str, torch.Tensor], kinds: Mapping[str, str],
               keys: Mapping[str, int], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Masked copies of a training batch's frame inputs (other inputs returned as they are).

    Args:
        inputs: Role -> batch tensor (``[B, T, F]`` sequences, ``[B, C, F, T]`` segments).
        lengths: Role -> valid frames per sample (sequences; segments use their full width).
        kinds: Role -> ``vector``, ``sequence`` or ``segments``.
        keys: From :func:`check_augment`.
        rng: The fold trainer's generator (the draws are part of the seeded run).
    """
    out = dict(inputs)
    for role, x in inputs.items():
        kind = kinds.get(role)
        if kind not in ("sequence", "segments"):
            continue
        x = x.clone()
        time_axis, freq_axis = (0, 1) if kind == "sequence" else (2, 1)
        for i in range(x.shape[0]):
            length = int(lengths[role][i]) if kind == "sequence" and role in lengths else x.shape[1 + time_axis]
            _mask_sample(x[i], length, time_axis, freq_axis, keys, rng)
        out[role] = x
    return out
