"""Spectral features: parity with librosa and the ADARL spectrogram shape contract.

Tolerances (float32 audio, matched parameters): log-mel ``atol=2e-3`` (natural log),
MFCC ``atol=2e-2`` (dB-scaled cepstra of magnitude up to ~400), log-STFT ``atol=2e-3``.
Measured maxima are about 10x smaller.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serray.features import get_extractor
from serray.features.spectral import cut_segments, log_mel_spectrogram, log_stft, mfcc

SR = 16000


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.7 * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.normal(size=t.size)
    x[12000:15000] = 0.0  # digital silence, as in padded corpora
    return x.astype(np.float32)


def test_log_mel_matches_librosa(signal: np.ndarray) -> None:
    librosa = pytest.importorskip("librosa")
    ref = np.log(
        librosa.feature.melspectrogram(y=signal, sr=SR, n_fft=400, win_length=400, hop_length=160, n_mels=40, fmin=0.0, fmax=8000.0)
        + 1e-6
    )
    ours = log_mel_spectrogram(torch.from_numpy(signal)).numpy()
    assert ours.shape == ref.shape == (40, 1 + len(signal) // 160)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-3)
    # the mfb extractor is that function, transposed to [T, 40]
    np.testing.assert_allclose(get_extractor("mfb").extract(signal), ours.T, rtol=0, atol=1e-6)


def test_mfcc_matches_librosa(signal: np.ndarray) -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.feature.mfcc(
        y=signal, sr=SR, n_mfcc=13, n_fft=400, win_length=400, hop_length=160, n_mels=40, fmin=0.0, fmax=8000.0
    )
    ours = mfcc(torch.from_numpy(signal)).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-2)
    assert get_extractor("mfcc").extract(signal).shape == (ref.shape[1], 13)


@pytest.mark.parametrize("win", [320, 640])
def test_log_stft_matches_librosa(signal: np.ndarray, win: int) -> None:
    librosa = pytest.importorskip("librosa")
    mag = np.abs(librosa.stft(signal, n_fft=1600, hop_length=160, win_length=win, window="hamming", center=True, pad_mode="constant"))
    ref = np.log(mag[:400] + 1e-8)
    ours = log_stft(torch.from_numpy(signal), SR, windows_ms=(win * 1000 / SR,), top_db=None).numpy()[0]
    assert ours.shape == ref.shape == (400, 1 + len(signal) // 160)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-3)


@pytest.mark.parametrize(
    ("seconds", "segments"),
    [(2.0, 1), (3.0, 1), (0.4, 1), (6.2, 2), (7.0, 3), (9.0, 3)],
)
def test_spectrogram_shape_contract(seconds: float, segments: int) -> None:
    x = np.random.default_rng(1).normal(0, 0.1, int(seconds * SR)).astype(np.float32)
    ext = get_extractor("spectrogram")
    out = ext.extract(x)
    # 3 s segments, 2 windows (20, 40 ms), 400 bins = 0-4 kHz at 10 Hz, 300 frames of 10 ms
    assert out.shape == (segments, 2, 400, 300) and out.dtype == np.float16
    frames = int(np.ceil(seconds * 100))
    kept = min(frames, segments * 300)
    flat = np.concatenate(list(out.astype(np.float32)), axis=-1)  # [C, F, S*300]
    assert np.all(flat[:, :, kept:] == 0)  # zero padding after the last real frame
    real = flat[:, :, :kept]
    np.testing.assert_allclose(real.mean(axis=(1, 2)), 0, atol=5e-2)  # z-scored per channel
    np.testing.assert_allclose(real.std(axis=(1, 2)), 1, atol=5e-2)


def test_cut_segments_drops_only_short_trailing_remainders() -> None:
    spec = torch.arange(2 * 3 * 650, dtype=torch.float32).reshape(2, 3, 650)
    out = cut_segments(spec, 300, min_last_frames=50)
    assert out.shape == (3, 2, 3, 300)
    assert torch.equal(out[1, :, :, :], spec[:, :, 300:600]) and torch.all(out[2, :, :, 50:] == 0)
    assert cut_segments(spec, 300, min_last_frames=51).shape[0] == 2
    assert cut_segments(spec[:, :, :20], 300, min_last_frames=50).shape[0] == 1  # the only segment is kept


def test_segment_padding_is_the_share_of_padded_frames(caplog) -> None:
    """``segment_padding`` of extracted spectrograms counts exactly the frames after the
    audio; the experiment warns (with the fix) when that is most of the input."""
    import logging
    from types import SimpleNamespace

    import pandas as pd

    from serray.features.spectral import segment_padding
    from serray.training.experiment import MAX_SEGMENT_PADDING, _warn_segment_padding

    rng = np.random.default_rng(3)
    ext = get_extractor("spectrogram")
    data = [ext.extract(rng.normal(0, 0.1, int(sec * SR)).astype(np.float32)) for sec in (2.0, 3.0, 7.0)]
    # frames 200, 300, 700 in 1 + 1 + 3 segments of 300
    assert segment_padding(data) == pytest.approx((100 + 0 + 200) / (5 * 300))
    fs = SimpleNamespace(data=data[:1], params={"segment_s": 3.0})
    manifest = pd.DataFrame({"duration_s": [2.0]})
    with caplog.at_level(logging.WARNING, logger="serray.training.experiment"):
        share = _warn_segment_padding("spectrogram", fs, manifest)
    assert share == pytest.approx(1 / 3) and share > MAX_SEGMENT_PADDING
    assert "33 % of the segment frames are zero padding (segment 3.0 s, median utterance 2.0 s)" in caplog.text
    assert "--param spectrogram.segment_s=S" in caplog.text
    caplog.clear()
    fs2 = SimpleNamespace(data=data[1:2], params={"segment_s": 3.0})
    with caplog.at_level(logging.WARNING, logger="serray.training.experiment"):
        assert _warn_segment_padding("spectrogram", fs2, manifest) == 0.0
    assert not caplog.text


def test_three_windows_give_three_channels() -> None:
    ext = get_extractor("spectrogram", windows_ms=[20, 30, 40])
    assert ext.extract(np.random.default_rng(2).normal(0, 0.1, SR).astype(np.float32)).shape == (1, 3, 400, 300)
    with pytest.raises(ValueError, match="n_fft"):
        get_extractor("spectrogram", windows_ms=[200])
