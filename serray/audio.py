"""Audio input: any sample rate and channel count in, mono float32 at the target rate out.

Bad files (unreadable, empty, too short, non-finite samples) raise :class:`AudioError`
naming the file and the reason; :func:`check_files` turns those into a report so a whole
run never aborts on one bad file and no file silently disappears.

Example:
    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> sf.write(p, np.zeros((44100, 2), dtype="float32") + 0.1, 44100)
    >>> load_audio(p, 16000).shape
    (16000,)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import soundfile as sf

__all__ = ["AudioError", "AudioInfo", "DEFAULT_SR", "MIN_DURATION_S", "load_audio", "audio_info", "check_files"]

log = logging.getLogger(__name__)

DEFAULT_SR = 16000
#: Shorter files are rejected: no feature set gives a meaningful frame under 100 ms.
MIN_DURATION_S = 0.1


class AudioError(ValueError):
    """A file that cannot be used as audio; ``str(err)`` names the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    sample_rate: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of ``path``.

    Raises:
        AudioError: Missing or unreadable file.
    """
    if not Path(path).is_file():
        raise AudioError(path, "file not found (check the corpus root / manifest path)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(path, f"unreadable audio ({exc.__class__.__name__}: {exc}); re-export it as WAV/FLAC") from exc
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = DEFAULT_SR,
    min_duration_s: float = MIN_DURATION_S,
) -> np.ndarray:
    """Load ``path`` as mono float32, resampled to ``sample_rate`` (``None`` keeps it).

    Channels are averaged; resampling uses soxr (high quality, deterministic).

    Raises:
        AudioError: Unreadable, empty, shorter than ``min_duration_s``, or containing
            NaN/inf samples.
    """
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not Path(path).is_file():
        raise AudioError(path, "file not found (check the corpus root / manifest path)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(path, f"unreadable audio ({exc.__class__.__name__}: {exc}); re-export it as WAV/FLAC") from exc
    if data.size == 0:
        raise AudioError(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    x = data.mean(axis=1)
    duration = len(x) / sr
    if duration < min_duration_s:
        raise AudioError(path, f"too short ({duration:.3f} s < {min_duration_s} s)")
    if sample_rate is not None and sr != sample_rate:
        import soxr

        x = soxr.resample(x, sr, sample_rate).astype(np.float32, copy=False)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_files(paths: Iterable[str | os.PathLike], full: bool = True, min_duration_s: float = MIN_DURATION_S) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Check every file; return ``(ok_mask, bad_report, durations_s)``.

    Args:
        paths: Audio files.
        full: Decode every file (finds NaN/inf and truncated data); ``False`` reads
            headers only.
        min_duration_s: Shorter files are reported as too short.

    Returns:
        A boolean mask of usable files, a DataFrame ``(path, reason)`` of the others, and
        each file's duration in seconds (NaN where unreadable).
    """
    paths = [str(p) for p in paths]
    ok = np.zeros(len(paths), dtype=bool)
    durations = np.full(len(paths), np.nan)
    bad: list[tuple[str, str]] = []
    for i, p in enumerate(paths):
        try:
            info = audio_info(p)
            durations[i] = info.duration_s
            if info.frames == 0:
                raise AudioError(p, "empty audio (0 samples)")
            if full:
                load_audio(p, sample_rate=None, min_duration_s=min_duration_s)
            elif info.duration_s < min_duration_s:
                raise AudioError(p, f"too short ({info.duration_s:.3f} s < {min_duration_s} s)")
            ok[i] = True
        except AudioError as exc:
            bad.append((exc.path, exc.reason))
    report = pd.DataFrame(bad, columns=["path", "reason"])
    if len(report):
        log.warning("%d of %d audio files are unusable and excluded, e.g. %s", len(report), len(paths), bad[0][0])
    return ok, report, durations
