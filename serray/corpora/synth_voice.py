"""The voice model of the synthetic corpora: source-filter synthesis of one utterance.

An utterance is synthesised in stages, each drawing from the utterance's random
generator in a fixed order (so the same seed gives the same samples): utterance-level
voice parameters (speaker, emotion, noise), a syllable timeline, an F0 contour, the
glottal source, articulation (onsets and formant-filtered vowels), and the channel
(tilt, level, band-pass, noise, resampling). :mod:`serray.corpora.synth` writes the
corpora.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

if TYPE_CHECKING:
    from serray.corpora.synth import SynthCorpus

__all__ = ["SYNTH_SAMPLE_RATE", "EmotionProfile", "EMOTION_PROFILES", "Speaker", "synthesize"]

#: Internal synthesis rate; corpora at other rates are resampled from it.
SYNTH_SAMPLE_RATE = 16000
_MIN_DUR_S, _MAX_DUR_S = 1.0, 3.5


@dataclass(frozen=True)
class EmotionProfile:
    """How one emotion shifts the voice, relative to the speaker's neutral voice.

    Attributes:
        pitch_st: F0 level shift in semitones.
        pitch_range: Factor on F0 movement (accents, declination, modulation).
        tempo: Factor on the syllable rate.
        energy_db: Level change in dB.
        tilt: Spectral tilt; positive is flatter (pressed voice, more high-frequency
            energy), negative is steeper (lax, breathy voice).
        breathiness: Aspiration noise level relative to the voiced source.
        jitter: Relative per-period F0 perturbation (standard deviation).
        shimmer: Relative per-period amplitude perturbation (standard deviation).
        pause_prob: Probability of a pause after a syllable.
        f1_shift: Relative F1 change (jaw opening; smiling raises F1/F2 a little).
    """

    pitch_st: float
    pitch_range: float
    tempo: float
    energy_db: float
    tilt: float
    breathiness: float
    jitter: float
    shimmer: float
    pause_prob: float
    f1_shift: float = 0.0


#: Profiles of the canonical labels; ``neutral`` is the reference.
EMOTION_PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(0.0, 1.0, 1.00, 0.0, 0.0, 0.06, 0.010, 0.04, 0.12, 0.00),
    "happy": EmotionProfile(4.0, 1.8, 1.15, 3.0, 0.2, 0.06, 0.012, 0.05, 0.08, 0.05),
    "sad": EmotionProfile(-1.5, 0.6, 0.80, -4.5, -0.6, 0.16, 0.018, 0.07, 0.24, -0.05),
    "angry": EmotionProfile(2.0, 1.1, 1.15, 8.0, 1.2, 0.03, 0.015, 0.05, 0.06, 0.08),
    "fear": EmotionProfile(4.5, 0.9, 1.18, 0.5, 0.1, 0.12, 0.025, 0.07, 0.20, 0.00),
    "disgust": EmotionProfile(-1.0, 0.9, 0.85, 1.0, 0.2, 0.08, 0.015, 0.06, 0.15, -0.03),
    "surprise": EmotionProfile(4.0, 1.9, 1.05, 3.0, 0.3, 0.06, 0.012, 0.05, 0.10, 0.05),
    "boredom": EmotionProfile(-2.5, 0.45, 0.85, -3.0, -0.4, 0.10, 0.012, 0.05, 0.18, -0.03),
    "calm": EmotionProfile(-1.0, 0.75, 0.90, -2.0, -0.2, 0.08, 0.010, 0.04, 0.15, 0.00),
}

# Vowel formants F1-F4 (Hz) of an adult male voice; female voices scale them up.
_VOWELS_EN = np.array([
    [730, 1090, 2440, 3400],  # a
    [530, 1840, 2480, 3500],  # e
    [270, 2290, 3010, 3600],  # i
    [570, 840, 2410, 3300],  # o
    [300, 870, 2240, 3300],  # u
    [660, 1720, 2410, 3400],  # ae
    [500, 1500, 2500, 3500],  # schwa
], dtype=float)
_VOWELS_DE = np.array([
    [750, 1250, 2500, 3500],  # a
    [400, 2050, 2600, 3500],  # e
    [280, 2250, 3000, 3600],  # i
    [420, 800, 2500, 3300],  # o
    [290, 750, 2300, 3300],  # u
    [280, 1800, 2150, 3300],  # y
    [390, 1650, 2350, 3300],  # oe
], dtype=float)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker's voice (and the offsets of the session it was recorded in)."""

    gender: str
    f0: float
    formant_scale: float
    tempo: float
    level_db: float
    tilt: float
    pitch_range: float
    expressiveness: float
    breathiness: float
    session_gain_db: float
    session_tilt: float



@dataclass(frozen=True)
class _Voice:
    """Utterance-level voice parameters: the speaker's voice moved by the emotion, plus noise."""

    pitch_st: float
    prange: float
    tempo: float
    level_db: float
    tilt: float
    breath: float
    jitter: float
    shimmer: float
    pause_prob: float
    f1_shift: float


def _mix(neutral: float, value: float, scale: float) -> float:
    return neutral + scale * (value - neutral)


def synthesize(rng: np.random.Generator, spk: Speaker, emo: EmotionProfile, spec: SynthCorpus) -> np.ndarray:
    """One utterance as float64 at ``spec.sample_rate``."""
    fs = SYNTH_SAMPLE_RATE
    v = _voice(rng, spk, emo, spec)
    sylls, accents, total, n = _syllables(rng, spec, v)
    f0 = _f0_contour(rng, spk, v, sylls, accents, total, n)
    source = _glottal_source(rng, spk, v, f0, n)
    out = _articulate(rng, spk, v, spec, source, sylls, n)
    return _channel(rng, v, spec, out, n, fs)


def _voice(rng: np.random.Generator, spk: Speaker, emo: EmotionProfile, spec: SynthCorpus) -> _Voice:
    """Utterance-level parameters: emotion effect scaled by expressiveness, plus noise."""
    neu = EMOTION_PROFILES["neutral"]
    ex = spk.expressiveness * spec.expressiveness
    pitch_st = _mix(neu.pitch_st, emo.pitch_st, ex) + rng.normal(0.0, 1.0)
    prange = spk.pitch_range * math.exp(math.log(emo.pitch_range) * ex + rng.normal(0.0, 0.2))
    tempo = spk.tempo * math.exp(math.log(emo.tempo) * ex + rng.normal(0.0, 0.08))
    level_db = -28.0 + spk.level_db + spk.session_gain_db + _mix(0.0, emo.energy_db, ex) + rng.normal(0.0, 1.5)
    tilt = spk.tilt + spk.session_tilt + _mix(0.0, emo.tilt, ex) + rng.normal(0.0, 0.25)
    breath = spk.breathiness + max(0.0, _mix(neu.breathiness, emo.breathiness, ex) - neu.breathiness)
    breath *= math.exp(rng.normal(0.0, 0.25))
    jitter = max(0.002, _mix(neu.jitter, emo.jitter, ex) * math.exp(rng.normal(0.0, 0.2)))
    shimmer = max(0.01, _mix(neu.shimmer, emo.shimmer, ex) * math.exp(rng.normal(0.0, 0.2)))
    pause_prob = float(np.clip(_mix(neu.pause_prob, emo.pause_prob, ex), 0.0, 0.5))
    f1_shift = _mix(0.0, emo.f1_shift, ex)
    return _Voice(pitch_st, prange, tempo, level_db, tilt, breath, jitter, shimmer, pause_prob, f1_shift)


def _syllables(
    rng: np.random.Generator, spec: SynthCorpus, v: _Voice
) -> tuple[list[tuple[int, float, float, float, float]], set[int], float, int]:
    """Syllable timeline ``(kind, onset start, nucleus start, nucleus end, gain)`` in seconds,
    the accented syllables, the duration (s) and the number of samples."""
    rate = spec.syllable_rate * v.tempo
    n_target = int(rng.integers(5, 12))
    t = rng.uniform(0.05, 0.15)
    sylls: list[tuple[int, float, float, float, float]] = []  # (kind, on_start, nuc_start, nuc_end, gain)
    accents = set(rng.choice(n_target + 8, size=max(1, (n_target + 8) // 3), replace=False).tolist())
    for i in range(n_target + 8):
        dur = float(np.clip(rng.normal(1.0, 0.25), 0.5, 1.6)) / rate
        kind = int(rng.choice(3, p=[0.4, 0.35, 0.25]))  # 0 none, 1 fricative, 2 plosive
        onset = 0.0 if kind == 0 else min(0.45 * dur, rng.uniform(0.04, 0.10) if kind == 1 else rng.uniform(0.03, 0.06))
        pause = rng.uniform(0.08, 0.3) / v.tempo if rng.random() < v.pause_prob else 0.0
        end = t + dur + pause
        if end + 0.05 > _MAX_DUR_S:
            break
        if i >= n_target and t + 0.05 >= _MIN_DUR_S:
            break
        gain = math.exp(rng.normal(0.0, 0.2)) * (1.4 if i in accents else 1.0)
        sylls.append((kind, t, t + onset, t + dur, gain))
        t = end
    total = min(_MAX_DUR_S, max(_MIN_DUR_S, t + rng.uniform(0.05, 0.15)))
    return sylls, accents, total, int(round(total * SYNTH_SAMPLE_RATE))


def _f0_contour(
    rng: np.random.Generator, spk: Speaker, v: _Voice, sylls: list[tuple[int, float, float, float, float]],
    accents: set[int], total: float, n: int,
) -> np.ndarray:
    """F0 per sample: semitones relative to the speaker's base F0, at a 200 Hz control rate."""
    fs = SYNTH_SAMPLE_RATE
    tc = np.arange(0.0, total + 0.01, 0.005)
    centers = np.array([0.5 * (s[2] + s[3]) for s in sylls])
    targets = rng.normal(0.0, 1.6, len(sylls)) + np.array([2.5 if i in accents else 0.0 for i in range(len(sylls))])
    win = signal.windows.hann(17)  # 80 ms smoothing
    accent_curve = np.convolve(np.pad(np.interp(tc, centers, targets), 8, mode="edge"), win / win.sum(), mode="valid")
    declination = 1.5 - 4.0 * tc / total
    mod = np.sin(2 * math.pi * rng.uniform(3.0, 6.0) * tc + rng.uniform(0, 2 * math.pi))
    st = np.interp(np.arange(n) / fs, tc, v.pitch_st + v.prange * (declination + accent_curve + 0.4 * mod))
    f0 = spk.f0 * np.power(2.0, st / 12.0)
    return np.clip(f0, 60.0, 600.0)


def _glottal_source(rng: np.random.Generator, spk: Speaker, v: _Voice, f0: np.ndarray, n: int) -> np.ndarray:
    """Glottal source: Rosenberg pulses, jitter and shimmer per period, plus aspiration."""
    fs = SYNTH_SAMPLE_RATE
    nominal_idx = np.floor(np.cumsum(f0 / fs)).astype(np.int64)
    n_periods = int(nominal_idx[-1]) + 2
    f0_j = f0 * (1.0 + v.jitter * rng.standard_normal(n_periods)[nominal_idx])
    phase = np.cumsum(f0_j / fs)
    period = np.floor(phase).astype(np.int64)
    frac = phase - period
    oq = float(np.clip(0.6 - 0.12 * v.tilt, 0.35, 0.85))
    tp, tn = 0.65 * oq, 0.35 * oq
    g = np.where(
        frac < tp,
        0.5 * (1.0 - np.cos(np.pi * frac / tp)),
        np.where(frac < tp + tn, np.cos(np.pi * (frac - tp) / (2.0 * tn)), 0.0),
    )
    amp = np.exp(v.shimmer * rng.standard_normal(int(period[-1]) + 2))[period]
    voiced = np.diff(g * amp, prepend=0.0) * (fs / (np.pi * spk.f0))
    asp = np.diff(rng.standard_normal(n), prepend=0.0) * (0.4 + 0.6 * (g > 0))
    return voiced + v.breath * asp


def _articulate(
    rng: np.random.Generator, spk: Speaker, v: _Voice, spec: SynthCorpus, source: np.ndarray,
    sylls: list[tuple[int, float, float, float, float]], n: int,
) -> np.ndarray:
    """Onsets (fricative noise, plosive bursts) and formant-filtered vowel nuclei, ``n`` samples."""
    fs = SYNTH_SAMPLE_RATE
    vowels = _VOWELS_EN if spec.language == "en" else _VOWELS_DE
    out = np.zeros(n + int(0.05 * fs))
    ring = int(0.03 * fs)
    for kind, on_start, nuc_start, nuc_end, gain in sylls:
        a, b = int(on_start * fs), int(nuc_start * fs)
        c = min(int(nuc_end * fs), n)
        if kind == 1 and b > a:  # fricative: band-passed noise
            centre = min(rng.uniform(2500.0, 5500.0) * spk.formant_scale, 0.42 * fs)
            sos = _bandpass(2, round(centre / 1.5, -1), round(min(centre * 1.4, 0.48 * fs), -1), fs)
            noise = signal.sosfilt(sos, rng.standard_normal(b - a)) * _envelope(b - a, 0.2, 0.3) * 0.35 * gain
            out[a:b] += noise
        elif kind == 2 and b > a:  # plosive: closure, then a short burst
            burst = min(int(0.012 * fs), b - a)
            out[b - burst : b] += np.diff(rng.standard_normal(burst), prepend=0.0) * 0.25 * gain
        if c - b < int(0.04 * fs):
            continue
        formants = vowels[rng.integers(len(vowels))] * spk.formant_scale * np.exp(rng.normal(0.0, 0.03, 4))
        formants[0] *= 1.0 + v.f1_shift
        formants[1] *= 1.0 + 0.5 * v.f1_shift
        seg = np.concatenate([source[b:c] * _envelope(c - b, 0.15, 0.3) * gain, np.zeros(ring)])
        out[b : c + ring] += signal.sosfilt(_formant_sos(formants, fs), seg)
    return out[:n]


def _channel(rng: np.random.Generator, v: _Voice, spec: SynthCorpus, out: np.ndarray, n: int, fs: int) -> np.ndarray:
    """Spectral tilt (first-order), level, channel, noise, and resampling to the corpus's rate."""
    a1 = float(np.clip(0.35 * v.tilt, -0.6, 0.6))
    out = signal.lfilter([1.0, -a1], [1.0 + abs(a1)], out) if a1 >= 0 else signal.lfilter([1.0 + a1], [1.0, a1], out)
    active = np.abs(out) > 1e-3 * float(np.max(np.abs(out)))
    rms = float(np.sqrt(np.mean(out[active] ** 2))) if active.any() else 1.0
    out *= 10.0 ** (v.level_db / 20.0) / max(rms, 1e-12)
    if spec.channel == "telephone":
        sos = _bandpass(4, 300.0, 3400.0, fs)
        out = signal.sosfilt(sos, out)
    if spec.snr_db is not None:
        snr = spec.snr_db + rng.uniform(-5.0, 5.0)
        speech_rms = float(np.sqrt(np.mean(out**2)))
        noise = signal.lfilter([1.0], [1.0, -0.7], rng.standard_normal(n))  # low-pass (brownish) noise
        if spec.channel == "telephone":
            noise = signal.sosfilt(sos, noise)
        noise *= speech_rms * 10.0 ** (-snr / 20.0) / float(np.sqrt(np.mean(noise**2)))
        out = out + noise
    out = out + 1e-4 * rng.standard_normal(n)
    if spec.sample_rate != fs:
        g_ = math.gcd(spec.sample_rate, fs)
        out = signal.resample_poly(out, spec.sample_rate // g_, fs // g_)
    return out


@functools.lru_cache(maxsize=1024)
def _bandpass(order: int, lo: float, hi: float, fs: int) -> np.ndarray:
    return signal.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    """Raised-cosine attack/release envelope over ``n`` samples (fractions of ``n``)."""
    env = np.ones(n)
    na, nr = max(1, int(attack * n)), max(1, int(release * n))
    env[:na] = 0.5 * (1.0 - np.cos(np.pi * np.arange(na) / na))
    env[n - nr :] = np.minimum(env[n - nr :], 0.5 * (1.0 + np.cos(np.pi * np.arange(nr) / nr)))
    return env


def _formant_sos(formants: np.ndarray, fs: int) -> np.ndarray:
    """Cascade of Klatt-style resonators (unit gain at DC) as second-order sections."""
    rows = []
    for f, bw in zip(formants, _BANDWIDTHS):
        if f >= 0.45 * fs:
            continue
        r = math.exp(-math.pi * bw / fs)
        a1, a2 = -2.0 * r * math.cos(2.0 * math.pi * f / fs), r * r
        rows.append([1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    return np.array(rows)
