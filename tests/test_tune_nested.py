"""serray tune --nested: one search per outer fold on that fold's training speakers only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.manifest import manifest_dir
from serray.training.spec import RunSpec
from serray.tune.nested import nested_tune
from serray.tune.options import SearchOptions
from serray.training.resources import Resources


def _run(w, **kw):
    return nested_tune(RunSpec(w, "svm", features="egemaps", protocol="loso"), SearchOptions(num_samples=4, resources=Resources(parallel=False), **kw))


def test_nested_reports_one_winner_per_outer_fold_and_resumes(synth_copy):
    w = synth_copy
    out = _run(w, name="n")
    speakers = pd.concat([pd.read_parquet(p) for p in manifest_dir(w).glob("*.parquet")])["speaker"].nunique()
    assert len(out.table) == speakers and out.table["fold"].tolist() == list(range(speakers))
    assert out.table["winner"].between(0, 3).all() and (out.table["trials"] == 4).all()
    rec = io.read_json(out.record_path)
    assert rec["selection"].startswith("nested") and len(rec["nested"]["folds"]) == speakers
    preds = pd.read_parquet(next((w / "predictions" / "n").glob("*.parquet")))
    test = preds[preds["split"] == "test"]
    assert test["utt_id"].is_unique and len(test) == rec["n_utterances"]
    assert abs(out.pooled["ua"] - rec["metrics"]["pooled"]["ua"]) < 1e-12
    with pytest.raises(FileExistsError, match="--resume"):
        _run(w, name="n")
    folder = w / "tune" / "n" / "folds"
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.stem != "2"}
    (folder / "2.json").unlink()
    with pytest.raises(ValueError, match=r"started with other settings \(num_samples: 4 -> 2\)"):  # issue 40 item 5
        nested_tune(RunSpec(w, "svm", features="egemaps", protocol="loso"),
                    SearchOptions(num_samples=2, name="n", resume=True,
                                  resources=Resources(parallel=False)))
    again = _run(w, name="n", resume=True)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.stem != "2"} == kept
    assert (folder / "2.json").exists() and again.notes and "already searched" in again.notes[0]
    pd.testing.assert_frame_equal(again.table, out.table)


def test_nested_selection_never_sees_the_outer_test_part(synth_copy):
    """Scrambling the labels of fold 0's test speaker changes nothing in fold 0's search."""
    w = synth_copy
    first = _run(w, name="a")
    rec = io.read_json(w / "tune" / "a" / "folds" / "0.json")
    test_speaker = rec["name"].split("=", 1)[1]
    for path in manifest_dir(w).glob("*.parquet"):
        m = pd.read_parquet(path)
        mask = m["speaker"] == test_speaker
        if mask.any():
            m.loc[mask, "emotion"] = np.roll(m.loc[mask, "emotion"].to_numpy(), 1)
            io.write_parquet(m, path)
    second = _run(w, name="b")
    rec_b = io.read_json(w / "tune" / "b" / "folds" / "0.json")
    assert [t["val_ua"] for t in rec_b["trials"]] == [t["val_ua"] for t in rec["trials"]]
    assert rec_b["winner"] == rec["winner"]
    assert first.table.loc[0, "test_ua"] != second.table.loc[0, "test_ua"]  # the test part did change


def test_cli_nested_prints_the_estimate_and_refuses_tune_only_options(synth_copy):
    args = ["tune", "svm", "--workdir", str(synth_copy), "--features", "egemaps", "--protocol", "kfold", "--k", "3",
            "--nested", "--num-samples", "3"]
    r = CliRunner().invoke(main, [*args, "--time-budget", "10"])
    assert r.exit_code == 1 and "--time-budget" in r.output and "--nested" in r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "nested test UA" in r.output and "nested.csv" in r.output


def test_nested_on_ray_tasks_gives_the_in_process_result(synth_copy):
    local = _run(synth_copy, name="here")
    remote = nested_tune(RunSpec(synth_copy, "svm", features="egemaps", protocol="loso"), SearchOptions(num_samples=4, name="ray",
                                                                                                           resources=Resources(parallel=True)))
    pd.testing.assert_frame_equal(local.table, remote.table)
    assert local.pooled == remote.pooled
