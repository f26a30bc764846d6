"""``data prepare`` on partial audio (issue 40, item 4): truncated WAV files, silence,
DC only and float samples beyond full scale are reported in bad.csv."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from click.testing import CliRunner

from serray.cli import main

SR = 16000


def _emodb(root: Path) -> dict[str, Path]:
    """A tiny EmoDB-named tree: 6 fine files; returns name -> path."""
    out = {}
    for i, name in enumerate(["03a01Fa", "03a01Wa", "08a02Tb", "09b01Lc", "16b10Nd", "12a05Ea"]):
        path = root / "wav" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.random.default_rng(i).normal(0, 0.1, int(0.3 * SR)).astype(np.float32), SR, subtype="PCM_16")
        out[name] = path
    return out


def _plant_bad_audio(files: dict[str, Path]) -> dict[str, Path]:
    x = np.random.default_rng(9).normal(0, 0.1, SR).astype(np.float32)
    trunc, zero, dc, loud = files["03a01Fa"], files["03a01Wa"], files["08a02Tb"], files["09b01Lc"]
    sf.write(trunc, x, SR, subtype="PCM_16")
    trunc.write_bytes(trunc.read_bytes()[:8044])  # header declares 32000 data bytes, 8000 present
    sf.write(zero, np.zeros(SR // 2, np.float32), SR, subtype="PCM_16")
    sf.write(dc, np.full(SR // 2, 0.25, np.float32), SR, subtype="PCM_16")
    sf.write(loud, x * 6080.0, SR, subtype="FLOAT")  # peaks far beyond full scale
    return {"trunc": trunc, "zero": zero, "dc": dc, "loud": loud}


def test_prepare_reports_truncated_silent_dc_and_out_of_range_audio(tmp_path, caplog):
    from serray.audio import wav_truncation
    from serray.corpora import prepare_corpus

    bad = _plant_bad_audio(_emodb(tmp_path / "emodb"))
    assert "32000 bytes" in wav_truncation(bad["trunc"]) and "8000 are present" in wav_truncation(bad["trunc"])
    with caplog.at_level(logging.WARNING, logger="serray"):
        res = prepare_corpus("emodb", tmp_path / "emodb" / "wav", tmp_path / "w")
    kept = set(res.manifest["path"])
    assert {str(bad["trunc"]), str(bad["zero"]), str(bad["dc"])}.isdisjoint(kept)  # before: all four kept
    assert str(bad["loud"]) in kept and len(res.manifest) == 3
    report = pd.read_csv(res.bad_path).set_index("path")
    assert "truncated" in report.loc[str(bad["trunc"]), "reason"]
    assert "silence" in report.loc[str(bad["zero"]), "reason"]
    assert "DC only" in report.loc[str(bad["dc"]), "reason"]
    assert "beyond full scale" in report.loc[str(bad["loud"]), "reason"]
    assert report["excluded"].to_dict() == {str(bad["trunc"]): True, str(bad["zero"]): True, str(bad["dc"]): True,
                                            str(bad["loud"]): False}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "3 of 6 audio file(s) excluded" in messages and "1 of 6 audio file(s) kept with a problem" in messages
    strict = prepare_corpus("emodb", tmp_path / "emodb" / "wav", tmp_path / "w", exclude_out_of_range=True)
    assert str(bad["loud"]) not in set(strict.manifest["path"]) and strict.bad["excluded"].all()


def test_header_only_check_still_finds_truncated_wav(tmp_path):
    from serray.corpora import prepare_corpus

    bad = _plant_bad_audio(_emodb(tmp_path / "emodb"))
    res = prepare_corpus("emodb", tmp_path / "emodb" / "wav", None, check_audio=False)
    assert str(bad["trunc"]) not in set(res.manifest["path"]) and len(res.manifest) == 5


def test_data_prepare_cli_lists_excluded_and_kept_files(tmp_path):
    bad = _plant_bad_audio(_emodb(tmp_path / "emodb"))
    r = CliRunner().invoke(main, ["data", "prepare", "emodb", str(tmp_path / "emodb" / "wav"), "-w", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    assert "3 unusable file(s) excluded" in r.output and "1 file(s) kept with a problem" in r.output
    assert os.path.basename(bad["loud"]) in r.output
