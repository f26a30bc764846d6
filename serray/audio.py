"""Audio input: any sample rate and channel count in, mono float32 at the target rate out.

Bad files (unreadable, empty, too short, non-finite samples) raise :class:`AudioError`
naming the file and the reason; :func:`check_files` turns those into a report so a whole
run never aborts on one bad file and no file silently disappears. It also finds files
that decode but are not usable recordings:

* truncated WAV files (the ``data`` chunk's header declares more bytes than the file
  holds; libsndfile silently reads what is there): excluded;
* silence or DC only (the mono signal's standard deviation after removing its mean is
  below :data:`SILENCE_STD`): excluded;
* float files with samples beyond full scale (peak above 1.0; PCM cannot exceed it):
  kept with a warning (the recording may just be scaled), excluded with
  ``exclude_out_of_range=True`` (``serray data prepare --exclude-out-of-range``).

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

__all__ = [
    "AudioError", "AudioInfo", "DEFAULT_SR", "MIN_DURATION_S", "SILENCE_STD", "load_audio", "audio_info", "check_files",
    "wav_truncation", "signal_problem",
]

log = logging.getLogger(__name__)

DEFAULT_SR = 16000
#: Shorter files are rejected: no feature set gives a meaningful frame under 100 ms.
MIN_DURATION_S = 0.1
#: A signal whose standard deviation after removing its mean is below this is silence or DC only
#: (one step of 16-bit PCM is 3e-5).
SILENCE_STD = 1e-6


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


def wav_truncation(path: str | os.PathLike) -> str | None:
    """Why a RIFF/WAVE file is truncated (``None`` when it is not, or is no RIFF WAV).

    Compares the size its ``data`` chunk header declares with the bytes the file holds
    after it; a streaming writer's unknown size (0 or 0xFFFFFFFF) is not checked.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(fh.fileno()).st_size
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                cid, n = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if cid == b"data":
                    present = size - pos - 8
                    if n not in (0, 0xFFFFFFFF) and present < n:
                        return (f"truncated: its header declares {n} bytes of audio data, {present} are present; "
                                "copy or export the file again")
                    return None
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def signal_problem(x: np.ndarray) -> str | None:
    """Why a decoded (mono) signal is no recording: silence or DC only (``None`` if fine)."""
    std = float(np.std(x.astype(np.float64) - float(np.mean(x, dtype=np.float64))))
    if std < SILENCE_STD:
        what = "silence (all samples zero)" if not np.any(x) else f"DC only (every sample {float(x[0]):.4g})"
        return f"{what}: the signal's standard deviation is {std:.2g} < {SILENCE_STD:g}; re-record or drop the file"
    return None


def _check_one(path: str, full: bool, min_duration_s: float) -> tuple[float, str | None]:
    """``(duration_s, out_of_range_reason)`` of a usable file.

    Raises:
        AudioError: The file is unusable (unreadable, empty, truncated, too short,
            non-finite, silence or DC only).
    """
    info = audio_info(path)
    if info.frames == 0:
        raise AudioError(path, "empty audio (0 samples)")
    truncated = wav_truncation(path)
    if truncated:
        raise AudioError(path, truncated)
    if not full:
        if info.duration_s < min_duration_s:
            raise AudioError(path, f"too short ({info.duration_s:.3f} s < {min_duration_s} s)")
        return info.duration_s, None
    x = load_audio(path, sample_rate=None, min_duration_s=min_duration_s)
    problem = signal_problem(x)
    if problem:
        raise AudioError(path, problem)
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
        return info.duration_s, (f"samples beyond full scale (peak {peak:.4g} > 1.0, a float file written without "
                                 "scaling); rescale it, or exclude such files with --exclude-out-of-range")
    return info.duration_s, None


def check_files(
    paths: Iterable[str | os.PathLike],
    full: bool = True,
    min_duration_s: float = MIN_DURATION_S,
    exclude_out_of_range: bool = False,
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Check every file; return ``(ok_mask, bad_report, durations_s)``.

    Args:
        paths: Audio files.
        full: Decode every file (finds NaN/inf, silence/DC-only and out-of-range
            samples); ``False`` reads headers only (still finds unreadable, empty and
            truncated WAV files).
        min_duration_s: Shorter files are reported as too short.
        exclude_out_of_range: Exclude float files with samples beyond full scale
            (default: keep them, reported with ``excluded`` False).

    Returns:
        A boolean mask of usable files, a DataFrame ``(path, reason, excluded)`` of the
        files with a problem (``excluded`` False: kept, with a warning), and each file's
        duration in seconds (NaN where excluded).
    """
    paths = [str(p) for p in paths]
    ok = np.zeros(len(paths), dtype=bool)
    durations = np.full(len(paths), np.nan)
    bad: list[tuple[str, str, bool]] = []
    for i, p in enumerate(paths):
        try:
            durations[i], warning = _check_one(p, full, min_duration_s)
        except AudioError as exc:
            bad.append((exc.path, exc.reason, True))
            continue
        ok[i] = not (warning and exclude_out_of_range)
        if warning:
            bad.append((p, warning, bool(exclude_out_of_range)))
    report = pd.DataFrame(bad, columns=["path", "reason", "excluded"])
    n_excluded = int(report["excluded"].sum())
    if n_excluded:
        first = report.loc[report["excluded"]].iloc[0]
        log.warning("%d of %d audio files are unusable and excluded, e.g. %s: %s", n_excluded, len(paths),
                    first["path"], first["reason"])
    if len(report) > n_excluded:
        first = report.loc[~report["excluded"]].iloc[0]
        log.warning("%d of %d audio files are kept with a problem, e.g. %s: %s", len(report) - n_excluded, len(paths),
                    first["path"], first["reason"])
    return ok, report, durations
