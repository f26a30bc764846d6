"""Synthetic emotional-speech corpus generator (serray.corpora.synth)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serray.audio import audio_info, load_audio
from serray.corpora.synth import (
    CORPUS_PRESETS,
    EMOTION_PROFILES,
    SynthCorpus,
    generate_synthetic_corpus,
)
from serray.manifest import load_manifests, validate_manifest

EMOTIONS = ("neutral", "happy", "sad", "angry")
SR = 16000


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synth_default")
    return out, generate_synthetic_corpus(out)


def _digests(df: pd.DataFrame) -> dict[str, str]:
    return {u: hashlib.sha256(Path(p).read_bytes()).hexdigest() for u, p in zip(df["utt_id"], df["path"])}


# --- manifest and files ----------------------------------------------------------------


def test_default_corpus_layout_and_manifest(default_corpus: tuple[Path, pd.DataFrame]) -> None:
    out, df = default_corpus
    assert len(df) == 2 * 8 * 4 * 6
    validate_manifest(df)
    assert set(df.columns) >= {
        "utt_id", "path", "corpus", "speaker", "emotion", "gender", "language",
        "naturalness", "session", "duration_s",
    }
    # the work directory is directly usable
    loaded = load_manifests(out)
    assert sorted(loaded["utt_id"]) == sorted(df["utt_id"])
    assert (out / "manifests" / "synth_a.parquet").is_file()
    assert (out / "manifests" / "synth_b.parquet").is_file()
    assert (out / "audio" / "synth_params.json").is_file()
    row = df.iloc[0]
    spk = row["speaker"].split("_", 2)[-1]
    assert row["utt_id"] == f"{row['corpus']}/{spk}/{Path(row['path']).stem}"
    assert Path(row["path"]).is_absolute()
    assert Path(row["path"]) == out / "audio" / row["corpus"] / spk / f"{Path(row['path']).stem}.wav"
    assert set(df["naturalness"]) == {"acted"}
    assert dict(df.groupby("corpus")["language"].first()) == {"synth_a": "en", "synth_b": "de"}


def test_speakers_genders_emotions_per_corpus(default_corpus: tuple[Path, pd.DataFrame]) -> None:
    _, df = default_corpus
    for corpus, part in df.groupby("corpus"):
        assert set(part["emotion"]) == set(EMOTIONS), corpus
        assert part["speaker"].nunique() == 8
        assert part["speaker"].str.startswith(f"{corpus}_").all()
        genders = part.groupby("speaker")["gender"].nunique()
        assert (genders == 1).all()
        assert part.groupby("gender")["speaker"].nunique().to_dict() == {"f": 4, "m": 4}
        counts = part.groupby(["speaker", "emotion"]).size()
        assert (counts == 6).all() and len(counts) == 32
        # sessions group speakers (one f, one m each) and never split a speaker
        assert (part.groupby("speaker")["session"].nunique() == 1).all()
        assert part["session"].nunique() == 4
        assert (part.groupby("session")["gender"].nunique() == 2).all()
    assert not set(df.loc[df.corpus == "synth_a", "speaker"]) & set(df.loc[df.corpus == "synth_b", "speaker"])


def test_audio_readable_rates_differ_durations(default_corpus: tuple[Path, pd.DataFrame]) -> None:
    _, df = default_corpus
    rates = {}
    for corpus, part in df.groupby("corpus"):
        infos = [audio_info(p) for p in part["path"]]
        assert {i.channels for i in infos} == {1}
        rates[corpus] = {i.sample_rate for i in infos}
        np.testing.assert_allclose([i.duration_s for i in infos], part["duration_s"], atol=1e-3)
    assert rates == {"synth_a": {16000}, "synth_b": {8000}}
    assert df["duration_s"].between(1.0, 3.5).all()
    for p in df.groupby("corpus")["path"].first():
        x = load_audio(p, SR)
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert 0.005 < float(np.sqrt(np.mean(x**2))) < 0.5
        assert float(np.max(np.abs(x))) < 1.0


def test_channels_differ(default_corpus: tuple[Path, pd.DataFrame]) -> None:
    """synth_b is band-limited (telephone): almost no energy below 200 Hz, unlike synth_a."""
    _, df = default_corpus
    low_share = {}
    for corpus, part in df.groupby("corpus"):
        shares = []
        for p in part["path"].iloc[:20]:
            x = load_audio(p, SR).astype(np.float64)
            spec = np.abs(np.fft.rfft(x)) ** 2
            freqs = np.fft.rfftfreq(len(x), 1 / SR)
            shares.append(spec[freqs < 200].sum() / spec.sum())
        low_share[corpus] = float(np.median(shares))
    assert low_share["synth_b"] < 0.2 * low_share["synth_a"]


# --- determinism and idempotency ---------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    kw = dict(n_speakers=2, utterances_per_emotion=1)
    a = generate_synthetic_corpus(tmp_path / "a", seed=3, **kw)
    b = generate_synthetic_corpus(tmp_path / "b", seed=3, **kw)
    c = generate_synthetic_corpus(tmp_path / "c", seed=4, **kw)
    da, db, dc = _digests(a), _digests(b), _digests(c)
    assert len(da) == 2 * 2 * 4
    assert da == db
    assert da.keys() == dc.keys()
    assert all(da[k] != dc[k] for k in da)
    cols = ["utt_id", "speaker", "emotion", "gender", "session", "duration_s"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_second_call_reuses_and_param_change_regenerates(tmp_path: Path) -> None:
    kw = dict(n_speakers=2, utterances_per_emotion=2, corpora=("synth_a",))
    first = generate_synthetic_corpus(tmp_path, **kw)
    mtimes = {p: Path(p).stat().st_mtime_ns for p in first["path"]}
    manifest = tmp_path / "manifests" / "synth_a.parquet"
    m_mtime = manifest.stat().st_mtime_ns
    second = generate_synthetic_corpus(tmp_path, **kw)
    pd.testing.assert_frame_equal(first, second)
    assert {p: Path(p).stat().st_mtime_ns for p in first["path"]} == mtimes
    assert manifest.stat().st_mtime_ns == m_mtime

    # a missing file triggers regeneration with identical content
    digests = _digests(first)
    Path(first["path"].iloc[0]).unlink()
    third = generate_synthetic_corpus(tmp_path, **kw)
    assert _digests(third) == digests

    # fewer utterances: new manifest, stale files removed
    fourth = generate_synthetic_corpus(tmp_path, n_speakers=2, utterances_per_emotion=1, corpora=("synth_a",))
    assert len(fourth) == 2 * 4 * 1
    on_disk = sorted(str(p) for p in (tmp_path / "audio" / "synth_a").glob("*/*.wav"))
    assert on_disk == sorted(fourth["path"])
    assert len(load_manifests(tmp_path)) == len(fourth)


def test_custom_corpus_and_emotions(tmp_path: Path) -> None:
    spec = SynthCorpus("synth_c", 22050, "it", channel="telephone", snr_db=10.0, expressiveness=0.5)
    df = generate_synthetic_corpus(
        tmp_path, n_speakers=3, utterances_per_emotion=1, emotions=("neutral", "fear", "boredom"), corpora=[spec]
    )
    assert len(df) == 3 * 3
    assert set(df["emotion"]) == {"neutral", "fear", "boredom"}
    assert set(df["language"]) == {"it"}
    assert df.groupby("gender")["speaker"].nunique().to_dict() == {"f": 2, "m": 1}
    assert {audio_info(p).sample_rate for p in df["path"]} == {22050}
    assert set(EMOTION_PROFILES) >= {"neutral", "happy", "sad", "angry", "fear", "boredom"}
    assert CORPUS_PRESETS["synth_a"].sample_rate != CORPUS_PRESETS["synth_b"].sample_rate


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_speakers=1), "n_speakers"),
        (dict(utterances_per_emotion=0), "utterances_per_emotion"),
        (dict(emotions=("neutral", "excited")), "no synthesis profile"),
        (dict(emotions=("sad", "sad")), "duplicates"),
        (dict(emotions=()), "at least one emotion"),
        (dict(corpora=("synth_z",)), "unknown synthetic corpus"),
        (dict(corpora=("synth_a", "synth_a")), "duplicate"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_synthetic_corpus(tmp_path, **kwargs)
    assert not (tmp_path / "manifests").exists()


def test_bad_corpus_spec() -> None:
    with pytest.raises(ValueError, match="channel"):
        SynthCorpus("x", 16000, "en", channel="radio")
    with pytest.raises(ValueError, match="sample_rate"):
        SynthCorpus("x", 4000, "en")


# --- learnability ------------------------------------------------------------------------


def _features(x: np.ndarray, sr: int = SR) -> np.ndarray:
    """A few eGeMAPS-like utterance statistics from numpy alone (pitch, energy, spectrum, rate)."""
    x = x.astype(np.float64)
    n_win, hop = 512, 160
    frames = sliding_window_view(x, n_win)[::hop] * np.hanning(n_win)
    power = np.abs(np.fft.rfft(frames, n=1024, axis=1)) ** 2
    freqs = np.fft.rfftfreq(1024, 1 / sr)
    rms_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    active = rms_db > rms_db.max() - 30
    # pitch: normalised autocorrelation peak between 60 and 500 Hz
    acf = np.fft.irfft(power, axis=1)[:, : sr // 60 + 1]
    acf = acf / (acf[:, :1] + 1e-12)
    lo = sr // 500
    lag = lo + np.argmax(acf[:, lo:], axis=1)
    voiced = active & (acf[np.arange(len(acf)), lag] > 0.5)
    st = 12 * np.log2(sr / lag[voiced] / 55.0) if voiced.sum() > 2 else np.zeros(3)
    p = power[active]
    centroid = (p * freqs).sum(1) / (p.sum(1) + 1e-12)
    low = p[:, freqs < 1000].sum(1)
    high = p[:, (freqs >= 1000) & (freqs < 4000)].sum(1)
    zcr = np.mean(np.abs(np.diff(np.sign(frames[active]), axis=1)) > 0, axis=1)
    e = rms_db[active]
    onsets = np.sum(np.diff(voiced.astype(int)) == 1) / (len(x) / sr)
    return np.array([
        st.mean(), st.std(), np.percentile(st, 90) - np.percentile(st, 10),
        e.mean(), e.std(), np.percentile(e, 90) - np.percentile(e, 10),
        np.mean(centroid), np.mean(10 * np.log10((low + 1e-12) / (high + 1e-12))),
        zcr.mean(), voiced.mean(), active.mean(), onsets,
    ])


def _ua_within(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pred = cross_val_predict(clf, X, y, groups=groups, cv=GroupKFold(n_splits=4))
    return float(balanced_accuracy_score(y, pred))


def _ua_cross(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
    return float(balanced_accuracy_score(y_test, clf.predict(X_test)))


def test_learnable_but_not_trivial(default_corpus: tuple[Path, pd.DataFrame]) -> None:
    """Speaker-independent linear classification on simple statistics: well above chance, below perfect."""
    _, df = default_corpus
    X = np.vstack([_features(load_audio(p, SR)) for p in df["path"]])
    assert np.isfinite(X).all()
    y = df["emotion"].to_numpy()
    ua = {}
    for corpus in ("synth_a", "synth_b"):
        m = (df["corpus"] == corpus).to_numpy()
        ua[corpus] = _ua_within(X[m], y[m], df["speaker"].to_numpy()[m])
        assert 0.45 < ua[corpus] < 0.98, (corpus, ua[corpus])
    a, b = (df["corpus"] == "synth_a").to_numpy(), (df["corpus"] == "synth_b").to_numpy()
    cross = _ua_cross(X[a], y[a], X[b], y[b])
    assert cross < ua["synth_b"], (cross, ua)
