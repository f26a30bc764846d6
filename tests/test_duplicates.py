"""Duplicate audio: the same wav files listed under two corpora or two speaker ids are refused by
the leakage guard (naming the files), and `serray data info` lists them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from serray.cli import main
from serray.corpora import prepare_corpus
from serray.duplicates import duplicate_audio
from serray.manifest import load_manifests
from serray.protocols import LeakageError, check_leakage, make_folds

EMOTIONS = ("angry", "sad", "neutral")


def _corpus(folder: Path, n_speakers: int = 3, per_emotion: int = 2, seed: int = 0) -> pd.DataFrame:
    """Write distinct noise wavs (same length, so sizes collide and hashing is exercised); return the table."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_speakers):
        for emo in EMOTIONS:
            for i in range(per_emotion):
                p = folder / f"s{s}_{emo}_{i}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(p, (0.1 * rng.normal(size=3200)).astype(np.float32), 16000, subtype="PCM_16")
                rows.append({"path": str(p), "speaker": f"s{s}", "emotion": emo})
    return pd.DataFrame(rows)


def _prepare(table: pd.DataFrame, w: Path, corpus: str) -> None:
    path = w.parent / f"{corpus}-table.csv"
    table.to_csv(path, index=False)
    prepare_corpus("table", path, w, corpus=corpus)


@pytest.fixture
def two_corpora_sharing_files(tmp_path) -> Path:
    """Corpus ``a`` and corpus ``b``; ``b`` lists two of ``a``'s files (one by path, one as a byte copy)."""
    w = tmp_path / "w"
    a = _corpus(tmp_path / "a", seed=1)
    b = _corpus(tmp_path / "b", seed=2)
    shutil.copy(a.loc[0, "path"], tmp_path / "b" / "copy.wav")
    b.loc[0, "path"] = a.loc[1, "path"]  # same file
    b.loc[1, "path"] = str(tmp_path / "b" / "copy.wav")  # same bytes, other file
    _prepare(a, w, "a")
    _prepare(b, w, "b")
    return w


def test_duplicates_found_by_path_and_by_content(two_corpora_sharing_files):
    m = load_manifests(two_corpora_sharing_files)
    dups = duplicate_audio(m)
    assert dups.groupby("group")["corpus"].apply(sorted).tolist() == [["a", "b"], ["a", "b"]]
    assert sorted(Path(p).name for p in dups["path"]) == ["copy.wav", "s0_angry_0.wav", "s0_angry_1.wav",
                                                          "s0_angry_1.wav"]
    # the same manifest without the copies has none
    assert duplicate_audio(m[~m["utt_id"].isin(dups["utt_id"])]).empty


def test_digests_persist_in_the_work_directory(two_corpora_sharing_files, monkeypatch):
    """A later process finds the digests in W/cache and reads no audio; a changed file is hashed again."""
    from serray import duplicates

    w = two_corpora_sharing_files
    monkeypatch.setattr(duplicates, "_DIGESTS", {})
    monkeypatch.setattr(duplicates, "_STORE", {"path": None, "loaded": set()})
    m = load_manifests(w)
    first = duplicate_audio(m)
    store = w / "cache" / "audio_digests.parquet"
    assert store.exists() and len(pd.read_parquet(store)) == len(m) - 1  # b's first row is a's file

    hashed: list[str] = []
    real = duplicates._hash_file
    monkeypatch.setattr(duplicates, "_hash_file", lambda p: hashed.append(p) or real(p))
    monkeypatch.setattr(duplicates, "_DIGESTS", {})  # a new process
    monkeypatch.setattr(duplicates, "_STORE", {"path": None, "loaded": set()})
    pd.testing.assert_frame_equal(duplicate_audio(load_manifests(w)), first)
    assert hashed == []
    changed = Path(m.loc[2, "path"])
    sf.write(changed, np.zeros(3200, np.float32), 16000, subtype="PCM_16")  # same size, new bytes and mtime
    duplicate_audio(load_manifests(w))
    assert hashed == [str(changed.resolve())]


@pytest.mark.parametrize("protocol, kw", [("loco", {}), ("cross-corpus", {"train_corpora": "b", "test_corpora": "a"})])
def test_loco_and_cross_corpus_refuse_shared_audio(two_corpora_sharing_files, protocol, kw):
    m = load_manifests(two_corpora_sharing_files)
    with pytest.raises(LeakageError, match=r"same audio .*s0_angry_[01]\.wav.*serray data info") as err:
        make_folds(m, protocol, **kw)
    assert "\n" not in str(err.value)
    # without the two shared rows the same protocol is accepted
    clean = m[~m["utt_id"].isin(duplicate_audio(m)["utt_id"])]
    assert make_folds(clean, protocol, **kw)


def test_one_file_under_two_speaker_ids_is_refused(tmp_path):
    table = _corpus(tmp_path / "c", n_speakers=4)
    table["utt_id"] = [f"c/{i}" for i in range(len(table))]  # own ids: the derived ones would collide
    table.loc[len(table) - 1, "path"] = table.loc[0, "path"]  # s3's last row is s0's first file
    _prepare(table, tmp_path / "w", "c")
    m = load_manifests(tmp_path / "w")
    with pytest.raises(LeakageError, match=r"test utterance\(s\) have the same audio.*s0_angry_0\.wav"):
        make_folds(m, "loso")
    # check_leakage itself (the call experiments make) refuses hand-made folds too
    s0 = m.loc[m["speaker"] == "c_s0", "utt_id"].tolist()
    rest = m.loc[m["speaker"] != "c_s0", "utt_id"].tolist()
    from serray.protocols import Fold

    fold = Fold(0, "hand", train=rest, validation=[], test=s0, validation_mode="stratified")
    with pytest.raises(LeakageError, match="as train utterances"):
        check_leakage(m, [fold])
    copy = m.loc[m["path"].duplicated(), "utt_id"].tolist()  # s3's row holding s0's file
    fold = Fold(1, "val", train=[u for u in rest if u not in copy], validation=copy, test=s0,
                validation_mode="stratified")
    with pytest.raises(LeakageError, match=r"fold 'val': 1 test utterance\(s\) .* as validation utterances"):
        check_leakage(m, [fold])
    # speaker-dependent folds may share speakers, never audio
    fold = Fold(2, "sd", train=rest, validation=[], test=s0, validation_mode="speaker-dependent")
    with pytest.raises(LeakageError, match="same audio"):
        check_leakage(m, [fold], allow_speaker_dependent=True)


def test_data_info_lists_duplicates(two_corpora_sharing_files, tmp_path):
    r = CliRunner().invoke(main, ["data", "info", str(two_corpora_sharing_files)])
    assert r.exit_code == 0, r.output
    assert "4 utterances in 2 group(s) share their audio" in r.output
    assert "copy.wav" in r.output and "s0_angry_1.wav" in r.output
    clean = tmp_path / "clean"
    _prepare(_corpus(tmp_path / "x"), clean, "x")
    r = CliRunner().invoke(main, ["data", "info", str(clean)])
    assert r.exit_code == 0 and "no duplicate audio" in r.output
