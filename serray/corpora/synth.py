"""Synthetic emotional-speech corpora: small, deterministic, learnable, not trivial.

The generator writes speech-like WAV files and one manifest per corpus into a work
directory, so tests, benchmarks and ``serray demo`` can run end to end without a real
corpus. Each utterance is a source-filter synthesis:

* a Rosenberg glottal-pulse train (its derivative, i.e. with lip radiation) driven by an
  F0 contour: speaker base F0, emotion pitch level, declination, per-syllable accents
  scaled by an emotion pitch range, a slow modulation, per-period jitter and shimmer;
  the open quotient sets the source's spectral tilt (pressed voice is flatter);
* pitch-synchronous aspiration noise (breathiness);
* a cascade of four second-order formant resonators per syllable, with vowel formant
  sets from the corpus's language, scaled by the speaker's vocal-tract length;
* syllables with optional fricative or plosive onsets, raised-cosine amplitude
  envelopes, stress, and pauses, at an emotion- and speaker-dependent syllable rate;
* an extra first-order tilt filter, and a level set from emotion, speaker, session and
  utterance;
* a channel per corpus: ``synth_a`` is clean 16 kHz English-like speech, ``synth_b`` is
  8 kHz German-like (language code ``de``, a different vowel inventory, slower and less
  expressive speakers) speech through a 300-3400 Hz telephone band-pass with additive
  noise.

Emotions differ as in the SER literature (angry: loud, flat tilt, fast, high pitch;
happy: high pitch, wide range, fast; sad: low pitch, narrow range, slow, quiet, breathy;
neutral: in between). Speakers differ in F0, vocal-tract length, tempo, loudness, tilt
and expressiveness, and every utterance draws its own deviations, so the per-emotion
distributions overlap. With eGeMAPS functionals and a leave-one-speaker-out logistic
regression the default corpus gives clearly-above-chance but imperfect UA.

All randomness is derived from ``seed``, the corpus name and the speaker / utterance
indices, so the same arguments give bit-identical files. Synthesis runs at 16 kHz
internally (bandwidth up to 8 kHz) and is resampled to each corpus's rate.

Example:
    >>> import tempfile
    >>> df = generate_synthetic_corpus(tempfile.mkdtemp(), n_speakers=2, utterances_per_emotion=1)
    >>> len(df), sorted(df["corpus"].unique())
    (16, ['synth_a', 'synth_b'])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import zlib
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import soundfile as sf

from serray import io
from serray.corpora.synth_voice import EMOTION_PROFILES, SYNTH_SAMPLE_RATE, EmotionProfile, Speaker, synthesize
from serray.manifest import read_manifest, write_manifest
from serray.workdir import Workdir

__all__ = [
    "GENERATOR_VERSION",
    "SYNTH_SAMPLE_RATE",
    "EmotionProfile",
    "EMOTION_PROFILES",
    "SynthCorpus",
    "CORPUS_PRESETS",
    "generate_synthetic_corpus",
]

log = logging.getLogger(__name__)

#: Bumped whenever the synthesis changes, so cached corpora are regenerated.
GENERATOR_VERSION = 1
_PARAMS_FILE = "synth_params.json"


@dataclass(frozen=True)
class SynthCorpus:
    """One synthetic corpus: its name, recording channel and speaker population.

    Attributes:
        name: Corpus name (manifest ``corpus`` column, folder and manifest file name).
        sample_rate: Sample rate of the written WAV files.
        language: ISO 639-1 code written to the manifest; selects the vowel inventory
            (``en``-like for ``en``, ``de``-like otherwise).
        channel: ``"clean"`` or ``"telephone"`` (300-3400 Hz band-pass).
        snr_db: Mean signal-to-noise ratio of additive noise (each utterance varies by
            +-5 dB); ``None`` adds only a -80 dBFS noise floor.
        syllable_rate: Mean syllables per second of neutral speech.
        expressiveness: Factor on every emotion's deviation from neutral.
    """

    name: str
    sample_rate: int
    language: str
    channel: str = "clean"
    snr_db: float | None = None
    syllable_rate: float = 4.5
    expressiveness: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"SynthCorpus name {self.name!r} must be non-empty and contain no '/'")
        if self.sample_rate < 8000:
            raise ValueError(f"SynthCorpus {self.name!r}: sample_rate must be >= 8000, got {self.sample_rate}")
        if self.channel not in ("clean", "telephone"):
            raise ValueError(f"SynthCorpus {self.name!r}: channel must be 'clean' or 'telephone', got {self.channel!r}")
        if self.syllable_rate <= 0 or self.expressiveness < 0:
            raise ValueError(f"SynthCorpus {self.name!r}: syllable_rate must be > 0 and expressiveness >= 0")


#: Named corpora usable in ``generate_synthetic_corpus(corpora=...)``.
CORPUS_PRESETS: dict[str, SynthCorpus] = {
    "synth_a": SynthCorpus("synth_a", 16000, "en", "clean", None, 4.6, 1.0),
    "synth_b": SynthCorpus("synth_b", 8000, "de", "telephone", 18.0, 4.0, 0.8),
}



def generate_synthetic_corpus(
    out_dir: str | Path,
    *,
    n_speakers: int = 8,
    utterances_per_emotion: int = 6,
    emotions: Sequence[str] = ("neutral", "happy", "sad", "angry"),
    seed: int = 0,
    corpora: Iterable[str | SynthCorpus] = ("synth_a", "synth_b"),
) -> pd.DataFrame:
    """Generate synthetic emotional-speech corpora into the work directory ``out_dir``.

    Writes ``out_dir/audio/<corpus>/<spk>/<spk>_<emotion>_<k>.wav`` and the manifests
    ``out_dir/manifests/<corpus>.parquet``, so ``out_dir`` is a ready serray work
    directory. Speakers alternate f/m (``spk01`` is f); two consecutive speakers (one f,
    one m) share a recording ``session`` (``<corpus>_sess<k>``, IEMOCAP-like), and every
    session has its own small gain and tilt offset. ``utt_id`` is
    ``<corpus>/<spk>/<name>``, ``speaker`` is ``<corpus>_<spk>``, ``naturalness`` is
    ``acted``.

    Idempotent: the generation parameters are stored in
    ``out_dir/audio/synth_params.json`` after a complete run; a second call with the same
    parameters whose manifests and files all exist reads the manifests and writes
    nothing. Otherwise the corpora are regenerated and stale WAV files of earlier runs
    under ``out_dir/audio/<corpus>/`` are removed.

    Args:
        out_dir: Work directory to write into (created if missing).
        n_speakers: Speakers per corpus (at least 2; half f, half m, one more f if odd).
        utterances_per_emotion: Utterances per speaker and emotion.
        emotions: Canonical emotion labels, each a key of :data:`EMOTION_PROFILES`.
        seed: Seed of every random choice; the same seed gives bit-identical files.
        corpora: Names of :data:`CORPUS_PRESETS` and/or :class:`SynthCorpus` objects.

    Returns:
        The concatenated manifest of all generated corpora.

    Raises:
        ValueError: Bad counts, unknown or duplicate emotions or corpora.
    """
    specs = _resolve_corpora(corpora)
    emotions, seed = _check_arguments(n_speakers, utterances_per_emotion, emotions, seed)
    out_dir = Path(out_dir).resolve()
    params = _jsonable({
        "generator_version": GENERATOR_VERSION,
        "n_speakers": n_speakers,
        "utterances_per_emotion": utterances_per_emotion,
        "emotions": list(emotions),
        "seed": seed,
        "corpora": [dataclasses.asdict(s) for s in specs],
    })
    audio_dir = Workdir(out_dir).audio_dir
    params_path = audio_dir / _PARAMS_FILE
    cached = _load_if_current(out_dir, params_path, params, specs)
    if cached is not None:
        log.info("synthetic corpora %s already in %s; nothing to do", [s.name for s in specs], out_dir)
        return cached

    if params_path.exists():
        params_path.unlink()  # an interrupted regeneration must not look complete
    frames = []
    for spec in specs:
        df = _generate_one(out_dir, spec, n_speakers, utterances_per_emotion, emotions, seed)
        write_manifest(df, out_dir, spec.name)
        _remove_stale(audio_dir / spec.name, set(df["path"]))
        frames.append(df)
    io.write_json(params, params_path)
    out = pd.concat(frames, ignore_index=True)
    log.info("generated %d synthetic utterances (%s) in %s", len(out), ", ".join(s.name for s in specs), out_dir)
    return out


def _check_arguments(
    n_speakers: int, utterances_per_emotion: int, emotions: str | Sequence[str], seed: int
) -> tuple[tuple[str, ...], int]:
    """``(emotions, seed)`` of :func:`generate_synthetic_corpus`, checked; one clear error otherwise."""
    emotions = (emotions,) if isinstance(emotions, str) else tuple(emotions)
    if isinstance(n_speakers, bool) or not isinstance(n_speakers, int) or n_speakers < 2:
        raise ValueError(f"n_speakers must be an int >= 2 (both genders are needed), got {n_speakers!r}")
    if isinstance(utterances_per_emotion, bool) or not isinstance(utterances_per_emotion, int) or utterances_per_emotion < 1:
        raise ValueError(f"utterances_per_emotion must be an int >= 1, got {utterances_per_emotion!r}")
    if not emotions:
        raise ValueError("emotions must name at least one emotion")
    unknown = [e for e in emotions if e not in EMOTION_PROFILES]
    if unknown:
        raise ValueError(f"emotions {unknown} have no synthesis profile; choose from {list(EMOTION_PROFILES)}")
    if len(set(emotions)) != len(emotions):
        raise ValueError(f"emotions {list(emotions)} contain duplicates")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return emotions, int(seed)


def _resolve_corpora(corpora: Iterable[str | SynthCorpus]) -> list[SynthCorpus]:
    if isinstance(corpora, (str, SynthCorpus)):
        corpora = [corpora]
    specs: list[SynthCorpus] = []
    for c in corpora:
        if isinstance(c, SynthCorpus):
            specs.append(c)
        elif isinstance(c, str) and c in CORPUS_PRESETS:
            specs.append(CORPUS_PRESETS[c])
        else:
            raise ValueError(
                f"unknown synthetic corpus {c!r}; use one of {sorted(CORPUS_PRESETS)} or a SynthCorpus(...)"
            )
    if not specs:
        raise ValueError("corpora must name at least one corpus")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"corpora {names} contain duplicate names")
    return specs


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _load_if_current(
    out_dir: Path, params_path: Path, params: Mapping[str, Any], specs: Sequence[SynthCorpus]
) -> pd.DataFrame | None:
    if not params_path.exists():
        return None
    try:
        if io.read_json(params_path) != params:
            log.info("%s holds other generation parameters; regenerating", params_path)
            return None
        frames = []
        for spec in specs:
            path = Workdir(out_dir).manifest(spec.name)
            if not path.exists():
                return None
            df = read_manifest(path)
            if not all(Path(p).is_file() for p in df["path"]):
                log.info("%s lists missing audio files; regenerating", path)
                return None
            frames.append(df)
    except (OSError, ValueError) as exc:
        log.info("cannot reuse synthetic corpora in %s (%s); regenerating", out_dir, exc)
        return None
    return pd.concat(frames, ignore_index=True)


def _remove_stale(corpus_dir: Path, keep: set[str]) -> None:
    stale = [p for p in corpus_dir.glob("spk*/spk*_*.wav") if str(p) not in keep]
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d stale synthetic WAV files under %s", len(stale), corpus_dir)


def _rng(seed: int, corpus: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(corpus.encode()), *keys]))


def _make_speakers(spec: SynthCorpus, n: int, seed: int) -> list[Speaker]:
    n_sessions = (n + 1) // 2
    sess_rng = _rng(seed, spec.name, 1, 0)
    sess_gain = sess_rng.normal(0.0, 1.5, n_sessions)
    sess_tilt = sess_rng.normal(0.0, 0.15, n_sessions)
    speakers = []
    for i in range(n):
        r = _rng(seed, spec.name, 2, i)
        gender = "f" if i % 2 == 0 else "m"
        if gender == "f":
            f0 = 210.0 * math.exp(r.normal(0.0, 0.12))
            fscale = 1.16 * math.exp(r.normal(0.0, 0.05))
            breath = 0.08 * math.exp(r.normal(0.0, 0.3))
        else:
            f0 = 110.0 * math.exp(r.normal(0.0, 0.13))
            fscale = math.exp(r.normal(0.0, 0.05))
            breath = 0.04 * math.exp(r.normal(0.0, 0.3))
        speakers.append(Speaker(
            gender=gender,
            f0=f0,
            formant_scale=fscale,
            tempo=math.exp(r.normal(0.0, 0.12)),
            level_db=r.normal(0.0, 2.0),
            tilt=r.normal(0.0, 0.3),
            pitch_range=math.exp(r.normal(0.0, 0.2)),
            expressiveness=math.exp(r.normal(0.0, 0.2)),
            breathiness=breath,
            session_gain_db=float(sess_gain[i // 2]),
            session_tilt=float(sess_tilt[i // 2]),
        ))
    return speakers


def _generate_one(
    out_dir: Path, spec: SynthCorpus, n_speakers: int, per_emotion: int, emotions: Sequence[str], seed: int
) -> pd.DataFrame:
    speakers = _make_speakers(spec, n_speakers, seed)
    audio_dir = Workdir(out_dir).audio_dir / spec.name
    emo_index = {e: list(EMOTION_PROFILES).index(e) for e in emotions}
    rows = []
    for si, spk in enumerate(speakers):
        spk_id = f"spk{si + 1:02d}"
        for emotion in emotions:
            for k in range(per_emotion):
                rng = _rng(seed, spec.name, 3, si, emo_index[emotion], k)
                x = synthesize(rng, spk, EMOTION_PROFILES[emotion], spec)
                name = f"{spk_id}_{emotion}_{k + 1:02d}"
                path = audio_dir / spk_id / f"{name}.wav"
                pcm = _to_pcm16(x)
                buf = BytesIO()
                sf.write(buf, pcm, spec.sample_rate, format="WAV", subtype="PCM_16")
                io.write_bytes(buf.getvalue(), path)
                rows.append({
                    "utt_id": f"{spec.name}/{spk_id}/{name}",
                    "path": str(path),
                    "corpus": spec.name,
                    "speaker": f"{spec.name}_{spk_id}",
                    "emotion": emotion,
                    "gender": spk.gender,
                    "language": spec.language,
                    "naturalness": "acted",
                    "session": f"{spec.name}_sess{si // 2 + 1}",
                    "duration_s": len(pcm) / spec.sample_rate,
                })
    return pd.DataFrame(rows)


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        log.debug("synthetic utterance peaks at %.2f; scaled down to avoid clipping", peak)
        x = x * (0.99 / peak)
    return np.round(x * 32767.0).astype(np.int16)


