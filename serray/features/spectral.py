"""Spectral features computed with torch (on a GPU when the actor has one).

* ``mfb``: 40-band log-mel filterbank energies, 25 ms Hann windows every 10 ms, as in
  the NHNN paper (paper 000, sec. 4.5, which used librosa): ``log(mel_power + 1e-6)``,
  ``[T, 40]``. The mel filterbank is librosa's default (Slaney mel scale, Slaney area
  normalisation), framing is librosa's (``center=True`` with zero padding), so ``T =
  1 + n_samples // hop``.
* ``mfcc``: 13 MFCCs (DCT-II, orthonormal) of the same 40-band mel power in dB with an
  80 dB floor below the utterance maximum, exactly as ``librosa.feature.mfcc`` computes
  them with matching parameters, ``[T, 13]``.
* ``spectrogram``: the ADARL input (paper 004, sec. 2.4): log-magnitude STFT with
  Hamming windows of 20 ms and 40 ms (one channel each; set ``windows_ms`` for more,
  e.g. ``20,30,40``), 10 ms shift, ``n_fft = 1600`` (10 Hz resolution at 16 kHz) and the
  400 bins 0-3990 Hz kept. Log magnitudes are floored 80 dB below the utterance maximum
  (digital silence would otherwise dominate the statistics), then z-scored per
  utterance and channel over all its frames and bins (train-set statistics would be
  better, but the feature stage does not know the folds; the models can renormalise).
  The frames (``ceil(n_samples / hop)``, one per 10 ms) are cut into non-overlapping
  segments of 300 frames (3 s); the last, partial segment is zero-padded to 300 frames
  (zero is the utterance mean after z-scoring) and dropped when shorter than
  ``min_last_segment_s`` (0.5 s) unless it is the only one. Per utterance
  ``[S, C, F, T] = [S, 2, 400, 300]``; a 2 s EmoDB file gives one segment. Stored as
  float16 (z-scores lose nothing that matters at 3 significant digits; half the disk).

Parity with librosa (``tests/test_features_spectral.py``): ``log_mel_spectrogram``
matches ``log(librosa.feature.melspectrogram(...) + 1e-6)`` within ``atol=2e-3``,
``mfcc`` matches ``librosa.feature.mfcc`` within ``atol=2e-2`` (values are in dB, tens to
hundreds in magnitude) and ``log_stft`` matches ``log(|librosa.stft(...)| + eps)``
within ``atol=2e-3``, all on float32 audio.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(0, 0.1, 32000).astype("float32")
    >>> get_extractor("mfb").extract(x).shape
    (201, 40)
    >>> get_extractor("spectrogram").extract(x).shape
    (1, 2, 400, 300)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

from serray.features.base import Extractor, FeatureError, get_extractor, register  # noqa: F401  (doctest)

__all__ = [
    "stft_magnitude",
    "log_mel_spectrogram",
    "mfcc",
    "log_stft",
    "zscore",
    "cut_segments",
    "segment_padding",
    "MFB",
    "MFCC",
    "Spectrogram",
]

_WINDOWS = ("hann", "hamming")


def _window(kind: str, length: int, device: Any) -> "torch.Tensor":  # noqa: F821
    import torch

    if kind == "hann":
        return torch.hann_window(length, periodic=True, device=device)
    if kind == "hamming":
        return torch.hamming_window(length, periodic=True, device=device)
    raise ValueError(f"window must be one of {_WINDOWS}, got {kind!r}")


def stft_magnitude(
    x: "torch.Tensor",  # noqa: F821
    n_fft: int,
    win_length: int,
    hop_length: int,
    window: str = "hann",
    power: float = 1.0,
) -> "torch.Tensor":  # noqa: F821
    """``|STFT(x)| ** power`` as librosa frames it (centred frames, zero padding).

    Args:
        x: Mono signal ``[n]``.
        n_fft: FFT size (``>= win_length``; the window is centred in it).
        win_length: Window length in samples.
        hop_length: Hop in samples.
        window: ``"hann"`` or ``"hamming"`` (periodic, like ``scipy.signal.get_window``).
        power: 1 for magnitude, 2 for power.

    Returns:
        ``[n_fft // 2 + 1, 1 + n // hop_length]``.
    """
    import torch

    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {tuple(x.shape)}")
    if not 0 < win_length <= n_fft:
        raise ValueError(f"need 0 < win_length <= n_fft, got win_length={win_length}, n_fft={n_fft}")
    if hop_length <= 0:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    spec = torch.stft(
        x, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
        window=_window(window, win_length, x.device), center=True, pad_mode="constant", return_complex=True,
    )
    mag = spec.abs()
    return mag if power == 1.0 else mag.pow(power)


def _mel_power(x: "torch.Tensor", sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int, f_min: float, f_max: float) -> "torch.Tensor":  # noqa: F821
    from torchaudio.functional import melscale_fbanks

    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
    power = stft_magnitude(x, n_fft, win_length, hop_length, "hann", power=2.0)
    fb = melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney")
    return fb.to(device=x.device, dtype=power.dtype).T @ power


def log_mel_spectrogram(
    x: "torch.Tensor",  # noqa: F821
    sample_rate: int = 16000,
    n_fft: int = 400,
    win_length: int = 400,
    hop_length: int = 160,
    n_mels: int = 40,
    f_min: float = 0.0,
    f_max: float = 8000.0,
    eps: float = 1e-6,
) -> "torch.Tensor":  # noqa: F821
    """``log(mel power + eps)``, ``[n_mels, T]``; equals librosa's melspectrogram (Slaney).

    Example:
        >>> import torch
        >>> log_mel_spectrogram(torch.zeros(16000)).shape
        torch.Size([40, 101])
    """
    import torch

    return torch.log(_mel_power(x, sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max) + eps)


def mfcc(
    x: "torch.Tensor",  # noqa: F821
    sample_rate: int = 16000,
    n_mfcc: int = 13,
    n_fft: int = 400,
    win_length: int = 400,
    hop_length: int = 160,
    n_mels: int = 40,
    f_min: float = 0.0,
    f_max: float = 8000.0,
    top_db: float = 80.0,
) -> "torch.Tensor":  # noqa: F821
    """MFCCs as ``librosa.feature.mfcc`` computes them, ``[n_mfcc, T]``.

    Mel power to dB (``10 log10(max(S, 1e-10))``, floored ``top_db`` below the maximum),
    then an orthonormal DCT-II over the mel axis.
    """
    import torch
    from torchaudio.functional import create_dct

    if not 0 < n_mfcc <= n_mels:
        raise ValueError(f"need 0 < n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    mel = _mel_power(x, sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    db = torch.maximum(db, db.max() - top_db)
    dct = create_dct(n_mfcc, n_mels, norm="ortho").to(device=x.device, dtype=db.dtype)  # [n_mels, n_mfcc]
    return dct.T @ db


def log_stft(
    x: "torch.Tensor",  # noqa: F821
    sample_rate: int = 16000,
    windows_ms: Sequence[float] = (20.0, 40.0),
    hop_ms: float = 10.0,
    n_fft: int = 1600,
    n_bins: int = 400,
    eps: float = 1e-8,
    top_db: float | None = 80.0,
) -> "torch.Tensor":  # noqa: F821
    """Natural-log magnitude STFT with one Hamming window length per channel, ``[C, n_bins, T]``.

    Args:
        x: Mono signal ``[n]``.
        sample_rate: Its rate.
        windows_ms: Window lengths in ms, one channel each.
        hop_ms: Frame shift in ms.
        n_fft: FFT size (1600 gives 10 Hz bins at 16 kHz).
        n_bins: Lowest bins kept (400 x 10 Hz = 0-4 kHz).
        eps: Added to the magnitude before the log.
        top_db: Floor each channel this many dB below its maximum (``None``: no floor).
    """
    import torch

    hop = int(round(sample_rate * hop_ms / 1000))
    if not 0 < n_bins <= n_fft // 2 + 1:
        raise ValueError(f"n_bins must be in 1..{n_fft // 2 + 1} for n_fft={n_fft}, got {n_bins}")
    chans = []
    for w in windows_ms:
        win = int(round(sample_rate * w / 1000))
        if win > n_fft:
            raise ValueError(f"window {w} ms ({win} samples) is longer than n_fft={n_fft}")
        mag = stft_magnitude(x, n_fft, win, hop, "hamming")[:n_bins]
        logmag = torch.log(mag + eps)
        if top_db is not None:
            logmag = torch.maximum(logmag, logmag.max() - top_db * math.log(10.0) / 20.0)
        chans.append(logmag)
    return torch.stack(chans)


def zscore(spec: "torch.Tensor", eps: float = 1e-5) -> "torch.Tensor":  # noqa: F821
    """Z-score each channel of ``[C, F, T]`` over all its bins and frames."""
    mean = spec.mean(dim=(1, 2), keepdim=True)
    std = spec.std(dim=(1, 2), keepdim=True)
    return (spec - mean) / std.clamp_min(eps)


def cut_segments(spec: "torch.Tensor", segment_frames: int, min_last_frames: int = 1) -> "torch.Tensor":  # noqa: F821
    """Cut ``[C, F, T]`` into ``[S, C, F, segment_frames]`` non-overlapping segments.

    The last segment is zero-padded; it is dropped when it has fewer than
    ``min_last_frames`` real frames and is not the only segment.
    """
    import torch

    c, f, t = spec.shape
    if segment_frames <= 0:
        raise ValueError(f"segment_frames must be positive, got {segment_frames}")
    n_seg = max(1, math.ceil(t / segment_frames))
    last = t - (n_seg - 1) * segment_frames
    if n_seg > 1 and last < min_last_frames:
        n_seg -= 1
        spec = spec[:, :, : n_seg * segment_frames]
        t = spec.shape[-1]
    padded = torch.zeros((c, f, n_seg * segment_frames), dtype=spec.dtype, device=spec.device)
    padded[:, :, :t] = spec
    return padded.reshape(c, f, n_seg, segment_frames).permute(2, 0, 1, 3).contiguous()


def segment_padding(segments: Sequence[np.ndarray]) -> float:
    """Share of all segment frames that are :func:`cut_segments`' zero padding.

    Padding frames are the all-zero frames at the end of an utterance's last segment (a
    real frame of a z-scored log spectrogram is never exactly zero in every bin). Much
    padding means the segment is long for the corpus: on the EmoDB copy in
    ``shared/data`` (every file 2.0 s) 3 s segments are a third padding.

    Example:
        >>> seg = np.ones((1, 2, 4, 10), dtype="float16"); seg[0, :, :, 6:] = 0
        >>> segment_padding([seg, np.ones((2, 2, 4, 10), dtype="float16")])
        0.13333333333333333
    """
    padded = total = 0
    for s in segments:
        s = np.asarray(s)
        real = np.flatnonzero(np.any(s[-1] != 0, axis=tuple(range(s.ndim - 2))))
        padded += s.shape[-1] - (int(real[-1]) + 1 if len(real) else 0)
        total += s.shape[0] * s.shape[-1]
    return padded / total if total else 0.0


class _Torch(Extractor):
    """Shared torch plumbing: numpy in, device computation, numpy out."""

    libraries = ("torch", "torchaudio")

    def _tensor(self, audio: np.ndarray) -> "torch.Tensor":  # noqa: F821
        import torch

        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)

    def _frames(self, ms: float) -> int:
        return int(round(self.sample_rate * ms / 1000))

    def _validate(self) -> None:
        p = self.params
        for k in ("win_ms", "hop_ms"):
            if k in p and p[k] <= 0:
                raise ValueError(f"extractor {self.name!r}: {k} must be positive, got {p[k]}")
        if "n_fft" in p and "win_ms" in p and self._frames(p["win_ms"]) > p["n_fft"]:
            raise ValueError(f"extractor {self.name!r}: n_fft={p['n_fft']} is shorter than the {p['win_ms']} ms window")
        if "f_max" in p and not 0 <= p.get("f_min", 0.0) < p["f_max"] <= self.sample_rate / 2:
            raise ValueError(f"extractor {self.name!r}: need 0 <= f_min < f_max <= sample_rate/2, got {p.get('f_min')}, {p['f_max']}")

    def _mel_kwargs(self) -> dict[str, Any]:
        p = self.params
        return dict(
            sample_rate=self.sample_rate, n_fft=p["n_fft"], win_length=self._frames(p["win_ms"]),
            hop_length=self._frames(p["hop_ms"]), n_mels=p["n_mels"], f_min=p["f_min"], f_max=p["f_max"],
        )


@register
class MFB(_Torch):
    """40-band log-mel filterbank (paper 000), ``[T, n_mels]``."""

    name = "mfb"
    kind = "sequence"
    defaults: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0, "n_fft": 400,
        "f_min": 0.0, "f_max": 8000.0, "eps": 1e-6,
    }

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = log_mel_spectrogram(self._tensor(audio), eps=self.params["eps"], **self._mel_kwargs())
        return out.T.contiguous().cpu().numpy().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"feature_names": [f"mfb_{i}" for i in range(self.params["n_mels"])], "hop_s": self.params["hop_ms"] / 1000}


@register
class MFCC(_Torch):
    """MFCCs of the 40-band mel power (librosa-identical), ``[T, n_mfcc]``."""

    name = "mfcc"
    kind = "sequence"
    defaults: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000, "n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0, "n_fft": 400,
        "f_min": 0.0, "f_max": 8000.0, "top_db": 80.0,
    }

    def _validate(self) -> None:
        super()._validate()
        if not 0 < self.params["n_mfcc"] <= self.params["n_mels"]:
            raise ValueError(f"extractor 'mfcc': need 0 < n_mfcc <= n_mels, got {self.params['n_mfcc']}, {self.params['n_mels']}")

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = mfcc(self._tensor(audio), n_mfcc=self.params["n_mfcc"], top_db=self.params["top_db"], **self._mel_kwargs())
        return out.T.contiguous().cpu().numpy().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"feature_names": [f"mfcc_{i}" for i in range(self.params["n_mfcc"])], "hop_s": self.params["hop_ms"] / 1000}


@register
class Spectrogram(_Torch):
    """ADARL multi-window log-STFT segments (paper 004), ``[S, C, 400, 300]`` float16."""

    name = "spectrogram"
    kind = "segments"
    storage_dtype = "float16"
    defaults: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000, "windows_ms": [20.0, 40.0], "hop_ms": 10.0, "n_fft": 1600, "n_bins": 400,
        "segment_s": 3.0, "min_last_segment_s": 0.5, "eps": 1e-8, "top_db": 80.0, "normalize": "utterance",
        "dtype": "float16",
    }

    def _validate(self) -> None:
        p = self.params
        if not p["windows_ms"] or any(w <= 0 for w in p["windows_ms"]):
            raise ValueError(f"extractor 'spectrogram': windows_ms must be positive lengths, got {p['windows_ms']}")
        if max(p["windows_ms"]) * self.sample_rate / 1000 > p["n_fft"]:
            raise ValueError(f"extractor 'spectrogram': n_fft={p['n_fft']} is shorter than the {max(p['windows_ms'])} ms window")
        if not 0 < p["n_bins"] <= p["n_fft"] // 2 + 1:
            raise ValueError(f"extractor 'spectrogram': n_bins must be in 1..{p['n_fft'] // 2 + 1}, got {p['n_bins']}")
        if p["hop_ms"] <= 0 or p["segment_s"] <= 0 or p["min_last_segment_s"] < 0:
            raise ValueError("extractor 'spectrogram': hop_ms and segment_s must be positive, min_last_segment_s >= 0")
        if p["normalize"] not in ("utterance", "none"):
            raise ValueError(f"extractor 'spectrogram': normalize must be 'utterance' or 'none', got {p['normalize']!r}")
        if p["dtype"] not in ("float16", "float32"):
            raise ValueError(f"extractor 'spectrogram': dtype must be float16 or float32, got {p['dtype']!r}")
        self.storage_dtype = p["dtype"]

    @property
    def segment_frames(self) -> int:
        """Frames per segment (300 for 3 s at 10 ms)."""
        return int(round(self.params["segment_s"] * 1000 / self.params["hop_ms"]))

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        import torch

        p = self.params
        hop = self._frames(p["hop_ms"])
        with torch.no_grad():
            spec = log_stft(
                self._tensor(audio), self.sample_rate, p["windows_ms"], p["hop_ms"], p["n_fft"], p["n_bins"],
                eps=p["eps"], top_db=p["top_db"],
            )
            spec = spec[:, :, : max(1, math.ceil(len(audio) / hop))]  # one frame per hop of audio
            if p["normalize"] == "utterance":
                spec = zscore(spec)
            min_last = int(round(p["min_last_segment_s"] * 1000 / p["hop_ms"]))
            segs = cut_segments(spec, self.segment_frames, max(1, min_last))
        return segs.cpu().numpy().astype(p["dtype"])

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {
            "channels": [f"hamming_{w:g}ms" for w in p["windows_ms"]],
            "freq_hz": [i * self.sample_rate / p["n_fft"] for i in (0, p["n_bins"] - 1)],
            "segment_frames": self.segment_frames,
            "hop_s": p["hop_ms"] / 1000,
        }
