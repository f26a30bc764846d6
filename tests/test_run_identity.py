"""Run identity (issue 40, item 1): a changed setting makes a new run, a named run never
holds results of two settings, and a seeds record describes exactly what the store holds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from serray.cli import main
from serray.predictions import read_predictions


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _run_dirs(w):
    d = w / "runs"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


SVM = ("train", "svm", "--features", "egemaps", "--protocol", "kfold", "--sequential")


def test_train_default_names_differ_for_every_setting(synth_copy):
    """Before: --k 2, --k 4, --validation balanced/fraction and --corpus synth_a all got
    one run name, each overwriting the previous predictions and record."""
    w = synth_copy
    variants = [["--k", "2"], ["--k", "4"], ["--k", "2", "--validation", "balanced"],
                ["--k", "2", "--validation", "fraction"], ["--k", "2", "--corpus", "synth_a"]]
    for extra in variants:
        r = _cli(*SVM, "--workdir", w, *extra)
        assert r.exit_code == 0, r.output
    runs = _run_dirs(w)
    assert len(runs) == 5, runs
    ks = sorted(json.loads((w / "runs" / r / "record.json").read_text())["k"] for r in runs)
    assert ks == [2, 2, 2, 2, 4]
    # the same settings again: the same run, replaced (not a sixth)
    r = _cli(*SVM, "--workdir", w, "--k", "4")
    assert r.exit_code == 0 and len(_run_dirs(w)) == 5, r.output


def test_train_named_run_of_other_settings_is_refused(synth_copy):
    w = synth_copy
    r = _cli(*SVM, "--workdir", w, "--k", "2", "--run", "mine")
    assert r.exit_code == 0, r.output
    before = (w / "predictions" / "mine").stat().st_mtime_ns, (w / "runs" / "mine" / "record.json").read_bytes()
    r = _cli(*SVM, "--workdir", w, "--k", "3", "--validation", "balanced", "--run", "mine")
    assert r.exit_code != 0
    line = [ln for ln in r.output.splitlines() if "mine" in ln]
    assert line and "k: 2 -> 3" in line[0] and "validation: coverage -> balanced" in line[0], r.output
    assert "another --run" in line[0] and "delete" in line[0] and "Traceback" not in r.output
    after = (w / "predictions" / "mine").stat().st_mtime_ns, (w / "runs" / "mine" / "record.json").read_bytes()
    assert after == before
    r = _cli(*SVM, "--workdir", w, "--k", "2", "--run", "mine", "--seed", "1")
    assert r.exit_code != 0 and "seed: 0 -> 1" in r.output
    r = _cli(*SVM, "--workdir", w, "--k", "2", "--run", "mine", "--set", "C=0.5")
    assert r.exit_code != 0 and "config.C: 1.0 -> 0.5" in r.output, r.output
    r = _cli(*SVM, "--workdir", w, "--k", "2", "--run", "mine")  # the same settings: rerun allowed
    assert r.exit_code == 0, r.output


def test_run_written_before_settings_files_is_checked_on_its_record(synth_copy):
    """A run stored by older serray (no settings.json) is compared on its record."""
    w = synth_copy
    r = _cli(*SVM, "--workdir", w, "--k", "2", "--run", "old")
    assert r.exit_code == 0, r.output
    rec_path = w / "runs" / "old" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec.pop("settings", None)
    rec_path.write_text(json.dumps(rec))
    (w / "runs" / "old" / "record.json.sha256").unlink()  # older serray wrote no checksums
    (w / "runs" / "old" / "settings.json").unlink(missing_ok=True)
    r = _cli(*SVM, "--workdir", w, "--k", "2", "--normalize", "speaker", "--run", "old")
    assert r.exit_code != 0 and "normalize: global -> speaker" in r.output, r.output
    r = _cli("report", w, "--runs", "old", "--bootstrap", "10")
    assert r.exit_code == 0, r.output


SEEDS = ("seeds", "svm", "--features", "egemaps", "--protocol", "kfold", "--run-prefix", "p")


@pytest.mark.slow
def test_seeds_runs_keep_one_setting_and_records_match_the_store(synth_copy):
    """Before: a changed --k/--normalize/--validation/--corpus skipped every seed as done and
    printed the old scores; --set added a second config to the run; --n 2 after --n 3
    rewrote the record to seeds [0, 1] while the store held 3."""
    w = synth_copy
    r = _cli(*SEEDS, "--workdir", w, "--k", "2", "--n", "3")
    assert r.exit_code == 0, r.output
    for extra, diff in [(["--k", "3"], "k: 2 -> 3"), (["--normalize", "speaker"], "normalize: global -> speaker"),
                        (["--validation", "fraction"], "validation: coverage -> fraction"),
                        (["--corpus", "synth_a"], 'corpora: ["synth_a", "synth_b"] -> ["synth_a"]'),
                        (["--set", "C=0.5"], "config.C: 1.0 -> 0.5")]:
        r = _cli(*SEEDS, "--workdir", w, "--n", "3", *(extra if extra[0] == "--k" else ["--k", "2", *extra]))
        assert r.exit_code != 0, (extra, r.output)
        assert "run 'p-base'" in r.output and diff in r.output and "--run-prefix" in r.output, (extra, r.output)
        assert "already done" not in r.output
    cid = json.loads((w / "runs" / "p-base" / "record.json").read_text())["config_id"]
    assert set(read_predictions(w, ["p-base"])["config_id"]) == {cid}  # no second config in the run

    r = _cli(*SEEDS, "--workdir", w, "--k", "2", "--n", "2")
    assert r.exit_code == 0, r.output
    rec = json.loads((w / "runs" / "p-base" / "record.json").read_text())
    assert rec["seeds"] == [0, 1, 2] == sorted(read_predictions(w, ["p-base"])["seed"].unique().tolist())
    assert [s["seed"] for s in rec["metrics"]["per_seed"]] == [0, 1, 2]
    assert "holds 3 seeds" in r.output and "--k 1-3" in r.output

    # default names: another setting is another run, trained rather than skipped
    names = []
    for extra in (["--k", "2"], ["--k", "3"]):
        r = _cli("seeds", "svm", "--features", "egemaps", "--protocol", "kfold", "--workdir", w, "--n", "1", *extra)
        assert r.exit_code == 0 and "already done" not in r.output, r.output
        names.append(next(ln for ln in r.output.splitlines() if ln.startswith("runs: ")).split()[1])
    assert names[0] != names[1] and all(n.startswith("seeds-svm-egemaps-kfold-native-global-base-") for n in names)
