"""Atomic writes, audio loading and bad-audio reports, labels, manifest contract, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from serray import audio, io, labels, manifest


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "x.json"
    io.write_json({"v": 1}, p)
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert io.read_json(p) == {"v": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.json", "x.json.sha256"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Prediction files (and every other atomic write) get 0o666 & ~umask, not mkstemp's 0o600."""
    import os
    import stat

    from serray.predictions import write_predictions

    df = pd.DataFrame({"fold": [0], "split": ["test"], "utt_id": ["u1"], "label": ["sad"],
                       "pred": ["sad"], "logits": [[0.1, 2.0]]})
    old = os.umask(umask)
    try:
        part = write_predictions(tmp_path, df, run="r1", config_id="c0", seed=0, classes=["happy", "sad"])
        io.write_json({"v": 1}, tmp_path / "x.json")
        assert io._umask() == umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(part.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == mode


def test_parquet_metadata_roundtrip(tmp_path):
    import pyarrow.parquet as pq

    df = pd.DataFrame({"a": [1, 2]})
    io.write_parquet(df, tmp_path / "t.parquet", metadata={"k": "v"})
    assert pq.read_schema(tmp_path / "t.parquet").metadata[b"k"] == b"v"
    pd.testing.assert_frame_equal(io.read_parquet(tmp_path / "t.parquet"), df)


def test_load_audio_downmixes_and_resamples(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, left], axis=1).astype(np.float32), sr)
    x = audio.load_audio(tmp_path / "s.wav", 16000)
    assert x.dtype == np.float32 and x.shape == (16000,)
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * 16000 / len(x) - 440) < 2


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x01garbage" * 10), "unreadable"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty"),
        (lambda p: sf.write(p, np.zeros(400, dtype=np.float32), 16000), "too short"),
        (lambda p: sf.write(p, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_audio_named_with_reason(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(audio.AudioError) as ei:
        audio.load_audio(p)
    assert str(p) in str(ei.value) and reason in str(ei.value)


def test_check_files_reports_and_keeps_good(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    missing = tmp_path / "missing.wav"
    ok, report, dur = audio.check_files([good, bad, missing])
    assert ok.tolist() == [True, False, False]
    assert report["path"].tolist() == [str(bad), str(missing)]
    assert dur[0] == pytest.approx(0.5)


def test_label_sets():
    df = pd.DataFrame({"emotion": ["angry", "boredom", "excited", "neutral", "sad", "happy"]})
    out = labels.apply_label_set(df, "4class")
    assert out["emotion"].tolist() == ["angry", "happy", "neutral", "sad", "happy"]
    assert out["emotion_native"].tolist() == ["angry", "excited", "neutral", "sad", "happy"]
    assert len(labels.apply_label_set(df, "native")) == 6
    with pytest.raises(ValueError, match="unknown label set"):
        labels.apply_label_set(df, "nope")
    labels.register_label_set("arousal2", {"angry": "angry", "happy": "angry", "sad": "sad", "neutral": "sad"})
    assert labels.apply_label_set(df, "arousal2")["emotion"].tolist() == ["angry", "sad", "sad", "angry"]
    with pytest.raises(ValueError, match="non-canonical"):
        labels.register_label_set("bad", {"angry": "furious"})


def _mini_manifest():
    return pd.DataFrame(
        {"utt_id": ["a/1", "a/2"], "path": ["/x/1.wav", "/x/2.wav"], "corpus": ["a", "a"],
         "speaker": ["a_1", "a_2"], "emotion": ["sad", "angry"], "gender": ["f", "m"]}
    )


def test_manifest_contract(tmp_path):
    m = _mini_manifest()
    manifest.write_manifest(m, tmp_path, "a")
    back = manifest.load_manifests(tmp_path)
    assert back["utt_id"].tolist() == ["a/1", "a/2"]
    with pytest.raises(manifest.ManifestError, match="missing required column"):
        manifest.validate_manifest(m.drop(columns=["speaker"]))
    with pytest.raises(manifest.ManifestError, match="duplicate utt_id"):
        manifest.validate_manifest(pd.concat([m, m]))
    with pytest.raises(manifest.ManifestError, match="not canonical"):
        manifest.validate_manifest(m.assign(emotion=["sad", "furious"]))
    with pytest.raises(manifest.ManifestError, match="no manifests"):
        manifest.load_manifests(tmp_path / "empty")


def _serray(*args):
    return subprocess.run([sys.executable, "-m", "serray", *args], capture_output=True, text=True)


def test_cli_lists_groups_and_unbuilt_commands_say_so():
    r = _serray("--help")
    assert r.returncode == 0
    for group in ("data", "features", "train", "tune", "seeds", "ensemble", "report", "demo"):
        assert group in r.stdout
    unbuilt = [g for g in ("features", "train", "tune", "seeds", "ensemble", "report", "demo")
               if "not implemented yet" in _serray(g, "--help").stdout]
    for g in unbuilt:
        r = _serray(g)
        assert r.returncode == 2 and "not implemented yet" in r.stderr
