"""Garbled stored files (issue 40): a byte range changed in each stored file kind is detected
with the file's path by the command that reads it (repaired where the command owns the file),
and never gives a silently wrong result. The Tune state is covered by tests/test_tune_state.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.workdir import Workdir

TRAIN = ("train", "logreg", "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--sequential")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _garble_digit(path: Path) -> None:
    """Change one digit in the middle of a text file: it still parses, with another number."""
    text = path.read_text()
    spots = [m.start() for m in re.finditer(r"\d", text)]
    i = spots[len(spots) // 2]
    path.write_text(text[:i] + str((int(text[i]) + 3) % 10) + text[i + 1:])


def _garble_bytes(path: Path) -> None:
    """Overwrite 16 bytes in the middle of a binary file (same length)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes((b ^ 0x5A) for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))


@pytest.fixture()
def trained(synth_copy):
    w = synth_copy
    r = _cli(*TRAIN, "--workdir", w, "--run", "r1")
    assert r.exit_code == 0, r.output
    return w, float(re.search(r"pooled UA (\S+)", r.output).group(1))


def _one_path_error(result, path: Path) -> None:
    assert result.exit_code != 0, result.output
    assert str(path) in result.output, result.output
    assert "Traceback" not in result.output


def test_run_record_and_settings(trained):
    w, _ = trained
    wd = Workdir(w)
    _garble_digit(wd.run_record("r1"))
    _one_path_error(_cli("report", w, "--runs", "r1", "--bootstrap", "10"), wd.run_record("r1"))
    _garble_digit(wd.run_settings("r1"))
    _one_path_error(_cli(*TRAIN, "--workdir", w, "--run", "r1"), wd.run_settings("r1"))


def test_manifest(trained):
    w, _ = trained
    path = next(Workdir(w).manifests_dir.glob("*.parquet"))
    _garble_bytes(path)
    _one_path_error(_cli(*TRAIN, "--workdir", w, "--run", "r2"), path)


def test_predictions_part(trained):
    w, _ = trained
    (part,) = Workdir(w).predictions("r1").glob("*.parquet")
    _garble_bytes(part)
    _one_path_error(_cli("report", w, "--runs", "r1", "--bootstrap", "10"), part)


def test_cached_features_are_repaired_with_the_same_numbers(trained):
    w, ua = trained
    files = sorted(p for p in Workdir(w).features_dir.rglob("*.parquet") if "failures" not in p.name)
    damaged = files[len(files) // 2]
    _garble_bytes(damaged)
    _one_path_error(_cli(*TRAIN, "--workdir", w, "--run", "r3"), damaged)  # named, with `serray features` as the fix
    fixed = _cli("features", w, "--set", "egemaps")
    assert fixed.exit_code == 0, fixed.output
    r = _cli(*TRAIN, "--workdir", w, "--run", "r3")
    assert r.exit_code == 0, r.output
    assert float(re.search(r"pooled UA (\S+)", r.output).group(1)) == ua


def test_best_yaml_garbled_and_edited_by_hand(trained):
    w, _ = trained
    best = Path(w) / "best.yaml"
    io.write_yaml({"model": "logreg", "config": {"C": 0.25}}, best)
    _garble_digit(best)
    r = _cli(*TRAIN, "--workdir", w, "--run", "r4", "--config", best)
    _one_path_error(r, best)
    assert "edited it by hand" in r.output and "best.yaml.sha256" in r.output
    io.checksum_path(best).unlink()  # the user says the edit was on purpose
    ok = _cli(*TRAIN, "--workdir", w, "--run", "r4", "--config", best)
    assert ok.exit_code == 0, ok.output


def test_a_file_rewritten_without_a_checksum_drops_the_old_sidecar(tmp_path):
    path = tmp_path / "x.json"
    io.write_json({"a": 1}, path)
    assert io.checksum_path(path).exists()
    io.write_text('{"a": 2}\n', path)
    assert not io.checksum_path(path).exists() and io.read_json(path) == {"a": 2}
