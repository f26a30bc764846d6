"""Checksums of stored bytes (issue 40, item 2).

Cached features and predictions parts are written with a SHA-256 sidecar and checked on
read: bytes overwritten afterwards, in a file that still parses, are refused naming the
file; the feature cache re-extracts the file, ``serray seeds`` retrains the part, and
ensemble/report refuse with the path and the fix. Files without a sidecar (written
before checksums) stay readable. Non-finite features are refused at extraction.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from serray import io, manifest, predictions
from serray.cli import main


def _garble_parquet(path: Path, column: str, change) -> None:
    """Rewrite one value of ``column`` in place with pyarrow: the file still parses, its
    schema and metadata are kept, only its bytes (and the value) differ."""
    table = pq.read_table(path)
    rows = table.column(column).to_pylist()
    rows[0] = change(rows[0])
    table = table.set_column(table.schema.get_field_index(column), table.schema.field(column),
                             pa.array(rows, type=table.schema.field(column).type))
    pq.write_table(table, path)
    pq.read_table(path)  # still parses


def _manifest(w: Path, n: int = 4) -> pd.DataFrame:
    return manifest.load_manifests(w).head(n)


# ------------------------------------------------------------------ io


def test_checksum_sidecar_is_written_with_the_file_and_checked(tmp_path):
    path = tmp_path / "x.parquet"
    io.write_parquet(pd.DataFrame({"a": [1.0, 2.0]}), path, checksum=True)
    side = io.checksum_path(path)
    assert side.read_text().split() == [io.file_sha256(path), "x.parquet"]
    assert subprocess.run(["sha256sum", "-c", side.name], cwd=tmp_path, capture_output=True).returncode == 0
    assert io.verify_checksum(path) is True
    _garble_parquet(path, "a", lambda v: v + 1)
    with pytest.raises(io.CorruptFileError, match="do not match the checksum") as err:
        io.read_parquet(path)
    assert str(path) in str(err.value)
    side.unlink()  # a file written before checksums: read unverified
    assert io.verify_checksum(path) is False
    assert io.read_parquet(path)["a"].tolist() == [2.0, 2.0]


def test_a_reader_between_a_writers_two_renames_waits_instead_of_failing(tmp_path):
    """The writer holds the folder's lock from the checksum's rename to the file's: a
    reader that sees the new checksum beside the old bytes checks again once it is released."""
    import fcntl
    import threading
    import time

    path = tmp_path / "x.parquet"
    io.write_parquet(pd.DataFrame({"a": [1.0]}), path, checksum=True)
    new = tmp_path / "new.parquet"
    pq.write_table(pa.table({"a": [2.0]}), new)
    result: list = []
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as atomic_path does, between its two renames
        io.checksum_path(path).write_text(f"{io.file_sha256(new)}  x.parquet\n")
        reader = threading.Thread(target=lambda: result.append(io.verify_checksum(path)))
        reader.start()
        time.sleep(0.3)
        assert reader.is_alive() and not result  # mismatch seen; waiting for the lock
        os.replace(new, path)
    finally:
        os.close(fd)
    reader.join(5)
    assert result == [True]


# ------------------------------------------------------------------ feature cache


def test_garbled_vector_features_are_named_and_re_extracted(synth_copy, caplog):
    from serray.features import extract_features, load_features

    w = synth_copy
    m = _manifest(w)
    before = load_features(w, "egemaps", m).data
    (part,) = list((w / "features").glob("egemaps-*/vectors/*.parquet"))
    _garble_parquet(part, "values", lambda v: [x * 0.5 for x in v])
    with pytest.raises(io.CorruptFileError) as err:  # before: loaded the changed values silently
        load_features(w, "egemaps", m)
    assert str(part) in str(err.value) and "serray features" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="serray.features"):
        rep = extract_features(w, ["egemaps"], manifest=m, num_actors=0, progress=False)["egemaps"]
    assert rep.n_extracted == 4 and rep.n_failed == 0  # before: 0 extracted, all counted as cached
    assert any(str(part) in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(load_features(w, "egemaps", m).data, before, rtol=1e-5)


def test_nan_written_into_a_cached_npy_is_named_and_re_extracted(synth_copy, caplog):
    from serray.features import extract_features, load_features
    from serray.features.base import file_identity, get_extractor
    from serray.features.cache import FeatureCache, npy_problem

    w = synth_copy
    m = _manifest(w)
    extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)
    victim = FeatureCache(w, get_extractor("mfb")).array_path(file_identity(m["path"].iloc[1]))
    arr = np.load(victim, mmap_mode="r+")
    arr[:5] = np.nan  # the file keeps its header and size: it still parses
    arr.flush()
    del arr
    assert npy_problem(victim) is None
    with pytest.raises(io.CorruptFileError) as err:  # before: NaN frames went to training
        load_features(w, "mfb", m)
    assert str(victim) in str(err.value) and "serray features" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="serray.features"):
        rep = extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)["mfb"]
    assert (rep.n_cached, rep.n_extracted, rep.n_failed) == (3, 1, 0)  # before: 4 cached, 0 extracted
    assert any(str(victim) in r.getMessage() for r in caplog.records)
    fs = load_features(w, "mfb", m)
    assert len(fs) == 4 and all(np.isfinite(a).all() for a in fs.data)


def test_features_without_checksums_stay_readable(synth_copy):
    from serray.features import extract_features, load_features

    w = synth_copy
    m = _manifest(w)
    for side in (w / "features").rglob("*" + io.CHECKSUM_SUFFIX):
        side.unlink()
    assert len(load_features(w, "egemaps", m)) == 4
    rep = extract_features(w, ["egemaps"], manifest=m, num_actors=0, progress=False)["egemaps"]
    assert rep.n_extracted == 0 and rep.n_cached == 4


@pytest.mark.parametrize("kind", ["npy", "vector"])
def test_nan_in_a_file_without_checksum_is_named_and_re_extracted(synth_copy, kind):
    """A cache written before checksums: its values are checked for NaN instead."""
    from serray.features import extract_features, load_features
    from serray.features.base import file_identity, get_extractor
    from serray.features.cache import FeatureCache

    w = synth_copy
    m = _manifest(w)
    name = "mfb" if kind == "npy" else "egemaps"
    if kind == "npy":
        extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)
        victim = FeatureCache(w, get_extractor("mfb")).array_path(file_identity(m["path"].iloc[1]))
        arr = np.load(victim, mmap_mode="r+")
        arr[3] = np.nan
        arr.flush()
        del arr
    else:
        (victim,) = list((w / "features").glob("egemaps-*/vectors/*.parquet"))
        _garble_parquet(victim, "values", lambda v: [float("nan")] + v[1:])
    for side in (w / "features").rglob("*" + io.CHECKSUM_SUFFIX):
        side.unlink()
    with pytest.raises(io.CorruptFileError, match="NaN") as err:  # before: NaN went to training
        load_features(w, name, m)
    assert str(victim) in str(err.value)
    rep = extract_features(w, [name], manifest=m, num_actors=0, progress=False)[name]
    assert rep.n_extracted == (1 if kind == "npy" else 4) and rep.n_failed == 0
    fs = load_features(w, name, m)
    assert len(fs) == 4 and all(np.isfinite(np.asarray(a)).all() for a in fs.data)


def test_non_finite_features_are_refused_at_extraction_naming_the_file(synth_copy, monkeypatch):
    """An extractor (e.g. a batched one) that returns NaN: nothing is cached, the file is named."""
    from serray.features import extract_features, load_features
    from serray.features.base import extractor_class

    w = synth_copy
    m = _manifest(w, 3)
    cls = extractor_class("mfb")
    orig = cls.extract_batch

    seen = []

    def with_nan(self, audios):  # the second utterance extracted gets NaN frames
        out = []
        for a in orig(self, audios):
            seen.append(1)
            out.append(np.full_like(a, np.nan) if len(seen) == 2 else a)
        return out

    monkeypatch.setattr(cls, "extract_batch", with_nan)
    rep = extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)["mfb"]
    assert rep.n_failed == 1 and rep.n_extracted == 2  # before: the NaN frames were cached
    bad = rep.failures.iloc[0]
    assert bad["utt_id"] in set(m["utt_id"]) and bad["path"] in bad["reason"] and "NaN" in bad["reason"]
    fs = load_features(w, "mfb", m)
    assert bad["utt_id"] in fs.missing and all(np.isfinite(a).all() for a in fs.data)


# ------------------------------------------------------------------ predictions


def _store(w: Path) -> None:
    classes = ["angry", "neutral", "sad"]
    utts = [f"c/{i}" for i in range(24)]
    man = pd.DataFrame({"utt_id": utts, "path": [f"/x/{i}.wav" for i in range(24)], "corpus": "c",
                        "speaker": [f"c_{i % 4}" for i in range(24)], "emotion": [classes[i % 3] for i in range(24)],
                        "gender": ["f" if i % 4 < 2 else "m" for i in range(24)]})
    manifest.write_manifest(man, w, "c")
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        rows = [{"fold": i % 4, "split": split, "utt_id": u, "label": classes[i % 3], "pred": classes[(i + seed) % 3],
                 "logits": rng.normal(size=3).tolist()} for split in ("validation", "test") for i, u in enumerate(utts)]
        predictions.write_predictions(w, pd.DataFrame(rows), run="r1", config_id="c0", seed=seed, classes=classes)


def test_garbled_predictions_part_is_named_retrained_and_refused(tmp_path, caplog):
    from serray.training.seeds import stored_parts

    _store(tmp_path)
    part = tmp_path / "predictions" / "r1" / "c0__seed0.parquet"
    assert stored_parts(tmp_path, {"base": "r1"}, {"base": "c0"}, [0, 1])[0] == []
    _garble_parquet(part, "logits", lambda v: [x + 3.0 for x in v])
    assert predictions.run_classes(tmp_path, "r1") == ["angry", "neutral", "sad"]  # the file still parses
    with pytest.raises(io.CorruptFileError) as err:  # before: read the changed logits silently
        predictions.read_predictions(tmp_path, ["r1"])
    assert str(part) in str(err.value) and "serray seeds" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="serray.training"):
        todo, done = stored_parts(tmp_path, {"base": "r1"}, {"base": "c0"}, [0, 1])
    assert todo == [("base", 0)] and done == [("base", 1)]  # before: seed 0 counted as done
    assert any(str(part) in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)
    for args in (["ensemble", tmp_path, "--runs", "r1"], ["report", tmp_path, "--runs", "r1", "--bootstrap", "10"]):
        r = CliRunner().invoke(main, [str(a) for a in args])  # before: exit 0 with the changed numbers
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        (line,) = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert str(part) in line and "serray seeds" in line


def test_predictions_parts_without_checksums_stay_readable(tmp_path):
    from serray.training.seeds import stored_parts

    _store(tmp_path)
    for side in (tmp_path / "predictions").rglob("*" + io.CHECKSUM_SUFFIX):
        side.unlink()
    assert len(predictions.read_predictions(tmp_path, ["r1"])) == 2 * 2 * 24
    assert stored_parts(tmp_path, {"base": "r1"}, {"base": "c0"}, [0, 1]) == ([], [("base", 0), ("base", 1)])


def _flip_middle_bytes(path: Path, n: int = 4) -> None:
    """Overwrite ``n`` bytes in the middle of a file in place (its size is unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid: mid + n] = bytes(b ^ 0x5A for b in data[mid: mid + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["vector", "npy", "predictions"])
def test_any_overwritten_byte_range_is_detected_naming_the_file(synth_copy, kind):
    """Whatever the bytes (parsable or not), the reader refuses them with the path."""
    from serray.features import extract_features, load_features
    from serray.features.base import file_identity, get_extractor
    from serray.features.cache import FeatureCache

    w = synth_copy
    m = _manifest(w)
    if kind == "predictions":
        _store(w)
        path = w / "predictions" / "r1" / "c0__seed1.parquet"
        read = lambda: predictions.read_predictions(w, ["r1"])  # noqa: E731
    elif kind == "npy":
        extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)
        path = FeatureCache(w, get_extractor("mfb")).array_path(file_identity(m["path"].iloc[0]))
        read = lambda: load_features(w, "mfb", m)  # noqa: E731
    else:
        (path,) = list((w / "features").glob("egemaps-*/vectors/*.parquet"))
        read = lambda: load_features(w, "egemaps", m)  # noqa: E731
    read()
    _flip_middle_bytes(path)
    with pytest.raises(io.CorruptFileError) as err:
        read()
    assert str(path) in str(err.value)


# ------------------------------------------------------------------ through the CLI


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_refuses_garbled_features_naming_the_file_and_features_repairs(synth_copy):
    """Before: `train svm` exited 0 with a different UA on the changed values."""
    w = synth_copy
    train = ("train", "svm", "--features", "egemaps", "--protocol", "kfold", "--k", "2", "--sequential", "--workdir", w)
    (part,) = list((w / "features").glob("egemaps-*/vectors/*.parquet"))
    _garble_parquet(part, "values", lambda v: [0.0] * len(v))
    r = _cli(*train)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert str(part) in line and "serray features" in line
    r = _cli("features", w, "--set", "egemaps", "--num-actors", "0")
    assert r.exit_code == 0, r.output
    r = _cli(*train)
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_seeds_retrains_a_garbled_part(synth_copy, caplog):
    """Before: the changed part counted as done and its numbers went into the record."""
    w = synth_copy
    seeds = ("seeds", "svm", "--features", "egemaps", "--protocol", "kfold", "--k", "2", "--run-prefix", "p",
             "--n", "2", "--workdir", w)
    r = _cli(*seeds)
    assert r.exit_code == 0, r.output
    parts = sorted((w / "predictions" / "p-base").glob("*__seed0.parquet"))
    (part,) = parts
    good = predictions.read_predictions(w, ["p-base"])
    _garble_parquet(part, "logits", lambda v: v[::-1])
    with caplog.at_level(logging.WARNING, logger="serray.training"):
        r = _cli(*seeds)
    assert r.exit_code == 0, r.output
    assert any(str(part) in m.getMessage() and "trained again" in m.getMessage() for m in caplog.records)
    assert "1 (variant, seed) pair(s) were already done" in r.output, r.output
    again = predictions.read_predictions(w, ["p-base"])  # verified: the retrained part matches its checksum
    pd.testing.assert_frame_equal(again.sort_values(["seed", "split", "utt_id"]).reset_index(drop=True),
                                  good.sort_values(["seed", "split", "utt_id"]).reset_index(drop=True))
