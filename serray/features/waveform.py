"""The raw waveform as a feature set: input of models that fine-tune an SSL model themselves.

``waveform`` (kind ``sequence``) stores every utterance's samples at ``sample_rate`` as
``[T, 1]`` (``float16`` by default: half the disk, ~1e-3 relative precision, far below
the noise floor of speech corpora; ``float32`` to keep them exact), cropped to the first
``max_seconds``. The run's ``--normalize`` maps every sample by one affine transform
(global or per speaker), which the model's own per-utterance standardisation (as SSL
models expect) undoes, so the SSL model sees the same input either way.

Example:
    >>> import numpy as np
    >>> get_extractor("waveform", max_seconds=1.0).extract(np.ones(20000, np.float32)).shape
    (16000, 1)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from serray.features.base import Extractor, get_extractor, register  # noqa: F401

__all__ = ["Waveform"]


@register
class Waveform(Extractor):
    """Samples ``[T, 1]`` of one utterance (cropped to ``max_seconds``; ``0``: never)."""

    name = "waveform"
    kind = "sequence"
    defaults: ClassVar[dict[str, Any]] = {"sample_rate": 16000, "max_seconds": 15.0, "dtype": "float16"}

    def _validate(self) -> None:
        if self.params["max_seconds"] < 0:
            raise ValueError(f"extractor 'waveform': max_seconds must be >= 0, got {self.params['max_seconds']}")
        if self.params["dtype"] not in ("float16", "float32"):
            raise ValueError(f"extractor 'waveform': dtype must be float16 or float32, got {self.params['dtype']!r}")
        self.storage_dtype = self.params["dtype"]

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        ms = self.params["max_seconds"]
        audio = audio[: int(ms * self.sample_rate)] if ms > 0 else audio
        return audio.astype(self.params["dtype"])[:, None]

    def describe(self) -> dict[str, Any]:
        return {"feature_names": ["sample"], "hop_s": 1.0 / self.sample_rate}
