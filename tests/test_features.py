"""Feature extraction: extractors, the cache, failure handling, resume, Ray pool, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from serray.features import (
    FeaturesNotExtractedError,
    extract_features,
    extractor_names,
    get_extractor,
    list_cached,
    load_features,
)
from serray.features import spectral
from serray.features.cache import FeatureCache

SR = 16000


def _write_corpus(folder: Path, durations: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 1.2), seed: int = 0) -> pd.DataFrame:
    """Speech-like WAVs (harmonic tone with vibrato + noise) and a manifest for them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, dur in enumerate(durations):
        t = np.arange(int(dur * SR)) / SR
        f0 = 120 + 40 * i + 10 * np.sin(2 * np.pi * 4 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6)) * (0.5 + 0.5 * np.sin(np.pi * t / dur))
        x = (x + 0.01 * rng.normal(size=t.size)).astype(np.float32)
        path = folder / f"utt{i}.wav"
        sf.write(path, x, SR)
        rows.append({
            "utt_id": f"syn_{i}", "path": str(path), "corpus": "syn", "speaker": f"syn_s{i % 2}",
            "emotion": ["neutral", "happy", "sad", "angry", "neutral"][i % 5], "gender": "fm"[i % 2],
        })
    return pd.DataFrame(rows)


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    return tmp_path / "W", _write_corpus(tmp_path / "audio")


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- extractors


def test_registry_and_keys() -> None:
    assert {"egemaps", "compare", "lld", "mfb", "mfcc", "spectrogram", "ssl"} <= set(extractor_names())
    a, b = get_extractor("mfb"), get_extractor("mfb", n_mels=64)
    assert a.kind == "sequence" and a.sample_rate == 16000 and a.params["n_mels"] == 40
    assert a.key() == get_extractor("mfb").key() != b.key()
    assert get_extractor("spectrogram", windows_ms="20,30,40").params["windows_ms"] == [20.0, 30.0, 40.0]
    with pytest.raises(ValueError, match="no parameter"):
        get_extractor("mfb", n_mel=40)
    with pytest.raises(ValueError, match="unknown feature set"):
        get_extractor("nope")
    with pytest.raises(ValueError, match="needs a model"):
        get_extractor("ssl")


def test_egemaps_88_values_on_real_emodb(emodb_dir: Path) -> None:
    from serray.audio import load_audio

    ext = get_extractor("egemaps")
    x = load_audio(emodb_dir / "03a01Fa.wav", sample_rate=ext.sample_rate)
    v = ext.extract(x)
    assert v.shape == (88,) and v.dtype == np.float32 and np.isfinite(v).all()
    names = ext.feature_names()
    assert len(names) == 88
    f0 = v[names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert 10 < f0 < 50  # a male speaker's F0 in semitones above 27.5 Hz (~50-450 Hz)


def test_lld_is_32_per_10ms_frame(emodb_dir: Path) -> None:
    from serray.audio import load_audio

    ext = get_extractor("lld")
    x = load_audio(emodb_dir / "03a01Fa.wav")
    out = ext.extract(x)
    assert out.shape[1] == 32 and abs(out.shape[0] - len(x) / 160) <= 3
    names = ext.feature_names()
    assert names[:1] == ["pcm_RMSenergy_sma"] and "F0_sma" in names and "voiceProb_sma_de" in names
    f0, vp = out[:, names.index("F0_sma")], out[:, names.index("voiceProb_sma")]
    # IS09's ACF pitch tracker is conservative (about 1 frame in 5 voiced here) but plausible
    assert (f0 > 0).mean() > 0.1 and f0.max() > 80 and (f0 < 500).all()
    assert ((vp >= 0) & (vp <= 1)).all() and vp[f0 > 0].mean() > vp[f0 == 0].mean()


# ---------------------------------------------------------------- cache


def test_extract_load_and_cache_hit(corpus: tuple[Path, pd.DataFrame]) -> None:
    W, m = corpus
    first = extract_features(W, ["mfb", "spectrogram", "egemaps"], m, num_actors=0, progress=False)
    for rep in first.values():
        assert (rep.n_total, rep.n_cached, rep.n_extracted, rep.n_failed) == (5, 0, 5, 0)
    second = extract_features(W, ["mfb", "spectrogram", "egemaps"], m, num_actors=0, progress=False)
    for rep in second.values():
        assert rep.n_cached == rep.n_total == 5 and rep.n_extracted == 0

    mfb = load_features(W, "mfb", m)
    assert mfb.kind == "sequence" and mfb.utt_ids == m["utt_id"].tolist() and mfb.missing == []
    assert mfb.shape == (40,) and [a.shape[0] for a in mfb.data] == [101, 151, 201, 251, 121]
    x, _ = sf.read(m["path"][2], dtype="float32")
    np.testing.assert_allclose(mfb.data[2], get_extractor("mfb").extract(x), rtol=0, atol=1e-6)

    eg = load_features(W, "egemaps", m.iloc[::-1])  # manifest order is kept
    assert eg.data.shape == (5, 88) and eg.data.dtype == np.float32 and eg.utt_ids == m["utt_id"][::-1].tolist()
    spec = load_features(W, "spectrogram", m)
    assert spec.shape == (2, 400, 300) and all(a.shape == (1, 2, 400, 300) for a in spec.data)

    # vectors end up in one consolidated Parquet file; sequences one .npy per file
    cache = FeatureCache(W, get_extractor("egemaps"))
    assert len(list(cache.vectors_dir.glob("*.parquet"))) == 1
    assert len(list(FeatureCache(W, get_extractor("mfb")).arrays_dir.rglob("*.npy"))) == 5

    listing = list_cached(W).set_index("set")
    assert listing.loc["egemaps", "dims"] == "88" and listing.loc["spectrogram", "dims"] == "2x400x300"
    assert (listing["n_utterances"] == 5).all() and (listing["size_mb"] > 0).all()

    # a changed file is extracted again, the others come from the cache
    p = Path(m["path"][0])
    sf.write(p, np.zeros(SR, np.float32) + 0.01, SR)
    third = extract_features(W, ["mfb"], m, num_actors=0, progress=False)["mfb"]
    assert (third.n_cached, third.n_extracted) == (4, 1)


def test_not_extracted_error_names_the_command(corpus: tuple[Path, pd.DataFrame]) -> None:
    W, m = corpus
    with pytest.raises(FeaturesNotExtractedError, match=r"serray features .* --set mfcc --param mfcc.n_mfcc=20"):
        load_features(W, "mfcc", m, params={"n_mfcc": 20})
    extract_features(W, ["mfcc"], m.iloc[:2], num_actors=0, progress=False)
    fs = load_features(W, "mfcc", m)
    assert fs.utt_ids == m["utt_id"][:2].tolist() and fs.missing == m["utt_id"][2:].tolist()


def test_corrupted_file_is_reported_and_skipped(corpus: tuple[Path, pd.DataFrame]) -> None:
    W, m = corpus
    bad = Path(m["path"][1])
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    gone = m.iloc[:1].assign(utt_id="ghost", path=str(bad.parent / "missing.wav"))
    m2 = pd.concat([m, gone], ignore_index=True)
    rep = extract_features(W, ["egemaps", "mfb"], m2, num_actors=0, progress=False)
    for r in rep.values():
        assert (r.n_extracted, r.n_failed) == (4, 2)
        fails = r.failures.set_index("utt_id")
        assert fails.loc["syn_1", "path"] == str(bad) and "unreadable" in fails.loc["syn_1", "reason"]
        assert "not found" in fails.loc["ghost", "reason"]
        assert r.failures_path is not None and r.failures_path.is_file()
    recorded = pd.read_parquet(rep["mfb"].failures_path)
    assert str(bad) in set(recorded["path"])
    # a second run neither retries the known-bad file nor re-extracts the good ones
    again = extract_features(W, ["mfb"], m2, num_actors=0, progress=False)["mfb"]
    assert (again.n_cached, again.n_extracted, again.n_failed) == (4, 0, 2)
    assert "earlier run" in again.failures.set_index("utt_id").loc["syn_1", "reason"]
    fs = load_features(W, "mfb", m2)
    assert fs.missing == ["syn_1", "ghost"] and len(fs.data) == 4


def test_interrupted_run_leaves_no_partial_entry_and_resumes(corpus: tuple[Path, pd.DataFrame], monkeypatch) -> None:
    W, m = corpus
    real = spectral.MFB._extract
    calls = {"n": 0}

    def flaky(self, audio):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the run dies mid-chunk
        return real(self, audio)

    monkeypatch.setattr(spectral.MFB, "_extract", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_features(W, ["mfb"], m, num_actors=0, progress=False, chunk_size=2)
    cache = FeatureCache(W, get_extractor("mfb"))
    assert len(cache.cached_keys()) == 2 and _tmp_files(W) == []  # first chunk complete, nothing half-written
    monkeypatch.setattr(spectral.MFB, "_extract", real)
    rep = extract_features(W, ["mfb"], m, num_actors=0, progress=False)["mfb"]
    assert (rep.n_cached, rep.n_extracted, rep.n_failed) == (2, 3, 0)


def test_write_failure_mid_file_leaves_nothing(corpus: tuple[Path, pd.DataFrame], monkeypatch) -> None:
    W, m = corpus
    import serray.features.cache as cache_mod

    def broken_save(fh, arr):
        fh.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        extract_features(W, ["mfb"], m.iloc[:1], num_actors=0, progress=False)
    cache = FeatureCache(W, get_extractor("mfb"))
    assert cache.cached_keys() == set() and list(cache.dir.rglob("*.npy")) == [] and _tmp_files(W) == []


# ---------------------------------------------------------------- Ray pool and CLI


def _assert_same_as_in_process(W: Path, local: Path, m: pd.DataFrame, sets: tuple[str, ...]) -> None:
    """The sets extracted in ``W`` equal, bit for bit, the same sets extracted in this process."""
    extract_features(local, list(sets), m, num_actors=0, progress=False)
    for name in sets:
        a, b = load_features(W, name, m), load_features(local, name, m)
        assert a.utt_ids == b.utt_ids
        for x, y in zip(a.data, b.data):
            np.testing.assert_array_equal(x, y)


def test_ray_pool_matches_in_process(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    import ray

    from serray.raycluster import init_ray

    W, m = corpus
    try:
        # 3 actors on a 2-CPU Ray: work goes only to started actors, nothing waits forever
        init_ray(None, num_cpus=2)
        rep = extract_features(W, ["egemaps", "lld"], m, num_actors=3, progress=False, chunk_size=2)
    finally:
        ray.shutdown()
    assert all(r.n_extracted == 5 and r.n_actors == 3 for r in rep.values())
    _assert_same_as_in_process(W, tmp_path / "W_local", m, ("egemaps", "lld"))


def test_small_local_job_uses_a_process_pool_with_the_same_features(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    import ray

    W, m = corpus
    assert not ray.is_initialized()
    rep = extract_features(W, ["egemaps", "mfb"], m, progress=False, chunk_size=2)  # no address, 5 files: the pool
    assert not ray.is_initialized()  # no Ray was started
    assert all(r.n_extracted == 5 and r.n_failed == 0 for r in rep.values())
    _assert_same_as_in_process(W, tmp_path / "W_local", m, ("egemaps", "mfb"))
    with pytest.raises(ValueError, match="local process pool"):
        extract_features(W, ["egemaps"], m, progress=False, use_ray=False, address="auto")


def test_pool_choice_can_be_forced_either_way() -> None:
    from serray.features.workers import LOCAL_POOL_MAX_FILES, PoolHolder

    def pool(n_files=10, address=None, num_actors=None, gpus=0.0, use_ray=None) -> bool:
        return PoolHolder(address, num_actors, gpus, use_ray)._process_pool(n_files)

    assert pool() and not pool(LOCAL_POOL_MAX_FILES + 1)  # small local work only
    assert not pool(use_ray=True) and pool(LOCAL_POOL_MAX_FILES + 1, use_ray=False)  # --ray / --no-ray
    assert not pool(address="auto") and not pool(gpus=0.5) and not pool(num_actors=0)  # cluster, GPUs, in-process


def test_cli_extract_and_list(corpus: tuple[Path, pd.DataFrame]) -> None:
    from click.testing import CliRunner

    from serray.cli import main
    from serray.manifest import write_manifest

    W, m = corpus
    write_manifest(m, W, "syn")
    runner = CliRunner()
    res = runner.invoke(main, ["features", str(W), "--set", "mfcc", "--param", "mfcc.n_mfcc=20", "--num-actors", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "5 extracted" in res.output
    res = runner.invoke(main, ["features", str(W), "--list"])
    assert res.exit_code == 0 and "mfcc" in res.output and "n_mfcc=20" in res.output
    res = runner.invoke(main, ["features", str(W), "--set", "nope"])
    assert res.exit_code != 0 and "unknown feature set" in res.output
    for p in m["path"]:
        Path(p).write_bytes(b"garbage")
    res = runner.invoke(main, ["features", str(W), "--set", "mfb", "--num-actors", "0", "--no-progress"])
    assert res.exit_code == 1 and "no features could be extracted" in res.output and "unreadable" in res.output
