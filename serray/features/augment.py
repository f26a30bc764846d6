"""Waveform augmentation: the spec, its tag, the per-copy draws and the signal processing.

``serray features W --set mfb --augment speed=0.9,1.1 --augment noise=5:20 --augment gain=-6:6
--augment-copies 2 --augment-seed 0`` extracts, besides every utterance's features, ``copies``
augmented copies of it into the same feature cache (:mod:`serray.features.copies`). Each copy
applies every listed augmentation once, in this order:

* ``speed=F1,F2,...``: speed perturbation by a factor drawn from the list (``1.0`` may be
  listed: unchanged), resampling the signal (SpeechBrain, Kaldi's 0.9/1.0/1.1): the
  copy is ``1/F`` as long, with its pitch shifted by ``F``.
* ``noise=LOW:HIGH[@SOURCE]``: additive noise at an SNR drawn uniformly from
  ``LOW..HIGH`` dB (``snr:5-20`` is read as ``5:20``). ``SOURCE`` is ``pink`` (default) or
  ``white`` synthetic noise, or a folder of noise recordings (``.wav``/``.flac``, any
  rate; one file is drawn per copy, read from a drawn offset and repeated to length).
* ``gain=LOW:HIGH``: a gain drawn uniformly from ``LOW..HIGH`` dB (no clipping).

The spec (with the copy count, the seed and, for a noise folder, a fingerprint of its
files) is hashed into a *tag* (``aug-1a2b3c4d``) that names it everywhere: copies are
cached under keys of (source file identity, tag, copy), so two specs never mix; copy
``i`` of utterance ``u`` is the utterance ``u@<tag>.<i>`` in training (config key
``wave_augment``, :mod:`serray.training.wave`). The spec is written to
``W/features/augment/<tag>.json``.

Draws are deterministic: copy ``i`` of a file draws its speed, SNR, gain, noise file,
offset and noise samples from a generator seeded by (tag, the file's name, ``i``), so the
same seed gives the same numbers on every machine and in every run.

Example:
    >>> aug = parse_augment(["speed=0.9,1.1", "noise=5:20", "gain=-6:6"], copies=2, seed=0)
    >>> aug.tag == parse_augment(["gain=-6:6", "speed=0.9,1.1", "noise=snr:5-20"], copies=2, seed=0).tag
    True
    >>> aug.tag != parse_augment(["speed=0.9,1.1", "noise=5:20", "gain=-6:6"], copies=2, seed=1).tag
    True
    >>> d = aug.draw("03a01Fa.wav", 0)
    >>> d == aug.draw("03a01Fa.wav", 0), d["speed"] in (0.9, 1.1), 5 <= d["snr_db"] <= 20
    (True, True, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from serray import io
from serray.workdir import Workdir

__all__ = [
    "AUGMENTATIONS", "NOISE_SOURCES", "WaveAugment", "parse_augment", "apply_draw", "copy_key", "copy_id",
    "write_spec", "read_spec", "augment_from_spec",
]

log = logging.getLogger(__name__)

#: Augmentations ``--augment NAME=VALUE`` accepts.
AUGMENTATIONS: tuple[str, ...] = ("speed", "noise", "gain")
#: Synthetic noise sources (else a folder of recordings).
NOISE_SOURCES: tuple[str, ...] = ("pink", "white")
_NOISE_SUFFIXES = (".wav", ".flac")
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class WaveAugment:
    """One waveform augmentation spec (see the module docstring).

    Attributes:
        speed: Speed factors drawn from (empty: no speed perturbation).
        snr: ``(low, high)`` SNR range in dB (``None``: no noise).
        noise: ``pink``, ``white`` or the absolute path of a noise folder.
        gain: ``(low, high)`` gain range in dB (``None``: no gain).
        copies: Copies per utterance.
        seed: Augmentation seed.
        noise_files: The noise folder's files (sorted; empty for synthetic noise).
        noise_fingerprint: Hash of the noise folder's names, sizes and times (in the tag).
    """

    speed: tuple[float, ...] = ()
    snr: tuple[float, float] | None = None
    noise: str = "pink"
    gain: tuple[float, float] | None = None
    copies: int = 1
    seed: int = 0
    noise_files: tuple[str, ...] = field(default=(), repr=False)
    noise_fingerprint: str = ""

    def describe(self) -> dict[str, Any]:
        """The spec as JSON-ready values (what the tag hashes and the run record keeps)."""
        out: dict[str, Any] = {"copies": int(self.copies), "seed": int(self.seed)}
        if self.speed:
            out["speed"] = [float(s) for s in self.speed]
        if self.snr is not None:
            out["noise"] = {"snr_db": [float(v) for v in self.snr], "source": self.noise}
            if self.noise_fingerprint:
                out["noise"]["fingerprint"] = self.noise_fingerprint
        if self.gain is not None:
            out["gain_db"] = [float(v) for v in self.gain]
        return out

    @property
    def tag(self) -> str:
        """``aug-`` and 8 hex digits of the spec's hash: names the copies everywhere."""
        blob = json.dumps(self.describe(), sort_keys=True)
        return "aug-" + hashlib.sha256(blob.encode()).hexdigest()[:8]

    def cli(self) -> str:
        """The ``serray features`` options that give this spec."""
        parts = []
        if self.speed:
            parts.append("--augment speed=" + ",".join(f"{s:g}" for s in self.speed))
        if self.snr is not None:
            src = "" if self.noise == "pink" else f"@{self.noise}"
            parts.append(f"--augment noise={self.snr[0]:g}:{self.snr[1]:g}{src}")
        if self.gain is not None:
            parts.append(f"--augment gain={self.gain[0]:g}:{self.gain[1]:g}")
        return " ".join([*parts, f"--augment-copies {self.copies}", f"--augment-seed {self.seed}"])

    def rng(self, name: str, copy: int) -> np.random.Generator:
        """The generator of copy ``copy`` of the file named ``name`` (deterministic)."""
        digest = hashlib.sha256(f"{self.tag}|{name}|{int(copy)}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def draw(self, name: str, copy: int) -> dict[str, Any]:
        """The random choices of one copy: speed, SNR, gain, noise file and offset, noise seed."""
        rng = self.rng(name, copy)
        out: dict[str, Any] = {"speed": float(self.speed[int(rng.integers(len(self.speed)))]) if self.speed else 1.0}
        if self.snr is not None:
            out["snr_db"] = float(rng.uniform(*self.snr))
            out["noise"] = self.noise_files[int(rng.integers(len(self.noise_files)))] if self.noise_files else self.noise
            out["noise_offset"] = float(rng.random())
            out["noise_seed"] = int(rng.integers(2**31))
        out["gain_db"] = float(rng.uniform(*self.gain)) if self.gain is not None else 0.0
        return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--augment {what}: {text!r} is not a number") from None


def _range(text: str, what: str) -> tuple[float, float]:
    """``LOW:HIGH``, ``LOW-HIGH`` or one value -> ``(low, high)``, checked ``low <= high``."""
    text = text.strip()
    if ":" in text:
        a, b = text.split(":", 1)
    elif _RANGE.match(text):
        a, b = _RANGE.match(text).groups()  # type: ignore[union-attr]
    else:
        a = b = text
    lo, hi = _number(a, what), _number(b, what)
    if lo > hi:
        raise ValueError(f"--augment {what}: range {text!r} has LOW > HIGH; write LOW:HIGH, e.g. {what}=-6:6")
    return lo, hi


def _noise_source(source: str) -> tuple[str, tuple[str, ...], str]:
    """``(source, noise files, fingerprint)`` of ``pink``/``white`` or a noise folder.

    Raises:
        ValueError: A folder that does not exist or holds no ``.wav``/``.flac`` file.
    """
    from serray.features.base import folder_fingerprint

    if source in NOISE_SOURCES:
        return source, (), ""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--augment noise=...@{source}: not a folder; give a folder of noise recordings "
                         f"(.wav/.flac) or one of {NOISE_SOURCES}")
    files = tuple(sorted(str(p.resolve()) for p in folder.rglob("*")
                         if p.is_file() and p.suffix.lower() in _NOISE_SUFFIXES and not p.name.startswith(".")))
    if not files:
        raise ValueError(f"--augment noise=...@{source}: the folder holds no .wav or .flac file; give a folder of "
                         f"noise recordings or one of {NOISE_SOURCES}")
    return str(folder.resolve()), files, folder_fingerprint(folder)


def _parse_item(item: str, fields: dict[str, Any]) -> None:
    """One ``NAME=VALUE`` item into ``fields`` (checked)."""
    name, eq, value = item.partition("=")
    name = name.strip()
    if not eq or name not in AUGMENTATIONS:
        raise ValueError(f"--augment {item!r}: must be NAME=VALUE with NAME one of {AUGMENTATIONS}, "
                         "e.g. speed=0.9,1.1 noise=5:20 gain=-6:6")
    if name in fields:
        raise ValueError(f"--augment {name} is given twice; give each augmentation once")
    if name == "speed":
        speeds = tuple(_number(v, "speed") for v in value.split(",") if v.strip())
        if not speeds or any(not 0.5 <= s <= 2.0 for s in speeds):
            raise ValueError(f"--augment speed={value}: give factors between 0.5 and 2, e.g. speed=0.9,1.0,1.1")
        fields["speed"] = speeds
    elif name == "gain":
        fields["gain"] = _range(value, "gain")
    else:
        snr, _, source = value.partition("@")
        fields["snr"] = _range(snr.strip().removeprefix("snr:"), "noise")
        fields["noise"], fields["noise_files"], fields["noise_fingerprint"] = _noise_source(source.strip() or "pink")


def parse_augment(items: Sequence[str], copies: int = 1, seed: int = 0) -> WaveAugment:
    """The spec of ``--augment NAME=VALUE`` items, ``--augment-copies`` and ``--augment-seed``.

    Raises:
        ValueError: No item, an unknown or repeated name, a bad value, fewer than one
            copy, or a bad noise folder (one line naming the option and the fix).
    """
    if not items:
        raise ValueError(f"--augment: give at least one of {AUGMENTATIONS}, e.g. --augment speed=0.9,1.1")
    if isinstance(copies, bool) or int(copies) < 1:
        raise ValueError(f"--augment-copies must be >= 1, got {copies!r}")
    fields: dict[str, Any] = {}
    for item in items:
        _parse_item(item, fields)
    return WaveAugment(copies=int(copies), seed=int(seed), **fields)


def augment_from_spec(spec: Mapping[str, Any]) -> WaveAugment:
    """The :class:`WaveAugment` of a stored spec (``W/features/augment/<tag>.json``).

    A noise folder is read again; a folder whose files changed since gives another tag,
    which the caller compares with the stored one.
    """
    noise = spec.get("noise") or {}
    fields: dict[str, Any] = {}
    if noise:
        fields["snr"] = tuple(noise["snr_db"])
        fields["noise"], fields["noise_files"], fields["noise_fingerprint"] = _noise_source(noise["source"])
    return WaveAugment(
        speed=tuple(spec.get("speed", ())), gain=tuple(spec["gain_db"]) if "gain_db" in spec else None,
        copies=int(spec["copies"]), seed=int(spec["seed"]), **fields,
    )


def write_spec(workdir: str | os.PathLike, aug: WaveAugment) -> Path:
    """Write ``W/features/augment/<tag>.json`` (the spec, its tag and its CLI options)."""
    path = Workdir(workdir).augment_spec(aug.tag)
    io.write_json({"tag": aug.tag, "spec": aug.describe(), "cli": aug.cli()}, path)
    return path


def read_spec(workdir: str | os.PathLike, tag: str) -> dict[str, Any] | None:
    """The stored spec of ``tag`` (``{"tag", "spec", "cli"}``), ``None`` when never extracted."""
    path = Workdir(workdir).augment_spec(tag)
    return io.read_json(path) if path.is_file() else None


def copy_key(file_key: str, tag: str, copy: int) -> str:
    """Cache key of copy ``copy`` of the file with identity ``file_key`` under ``tag`` (24 hex
    digits: a file's own key has 20, so a listing tells copies from utterances)."""
    return hashlib.sha1(f"{file_key}|{tag}|{int(copy)}".encode()).hexdigest()[:24]


def copy_id(utt_id: str, tag: str, copy: int) -> str:
    """Utterance id of a copy: ``<utt_id>@<tag>.<copy>``."""
    return f"{utt_id}@{tag}.{int(copy)}"


# ---------------------------------------------------------------------- signal processing


def _speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Speed perturbation: resample by ``1/factor`` and play at the same rate."""
    if factor == 1.0:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(1.0 / factor).limit_denominator(100)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def _synthetic_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of white or pink (1/f power) noise."""
    if kind == "white":
        return rng.standard_normal(n)
    from scipy.fft import irfft, next_fast_len, rfft

    m = next_fast_len(n, real=True)  # a length the FFT is fast at (a prime length takes 10x longer)
    spec = rfft(rng.standard_normal(m))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return irfft(spec / np.sqrt(f), m)[:n]


def _file_noise(path: str, n: int, offset: float, sample_rate: int, cache: dict[str, np.ndarray] | None) -> np.ndarray:
    """``n`` samples of a noise recording from a relative ``offset``, repeated to length."""
    from serray.audio import load_audio

    if cache is None or path not in cache:
        noise = load_audio(path, sample_rate=sample_rate)
        if cache is not None:
            cache[path] = noise
    else:
        noise = cache[path]
    start = int(offset * len(noise))
    reps = int(np.ceil((start + n) / len(noise)))
    return np.tile(noise, reps)[start: start + n].astype(np.float64)


def apply_draw(audio: np.ndarray, sample_rate: int, draw: Mapping[str, Any],
               noise_cache: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """One augmented copy of ``audio`` (mono float32): speed, then noise at the SNR, then gain.

    Args:
        draw: From :meth:`WaveAugment.draw`.
        noise_cache: Noise recordings already read (filled as files are read).
    """
    x = _speed(np.asarray(audio, dtype=np.float32), float(draw.get("speed", 1.0))).astype(np.float64)
    if "snr_db" in draw:
        source = str(draw["noise"])
        if source in NOISE_SOURCES:
            noise = _synthetic_noise(source, len(x), np.random.default_rng(int(draw["noise_seed"])))
        else:
            noise = _file_noise(source, len(x), float(draw["noise_offset"]), sample_rate, noise_cache)
        p_signal, p_noise = float(np.mean(x**2)), float(np.mean(noise**2))
        if p_signal > 0 and p_noise > 0:
            x = x + noise * np.sqrt(p_signal / (p_noise * 10 ** (float(draw["snr_db"]) / 10)))
    x = x * 10 ** (float(draw.get("gain_db", 0.0)) / 20)
    return x.astype(np.float32)
