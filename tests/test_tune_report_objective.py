"""`report --tune` without a leaderboard (issue 40, item 7): the search's objective from the
trial records, and text that names the objective the search used."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from serray import io
from serray.cli import main


def _trial(d, tid, objective, fold_best_mean, kind="common-epoch", **extra):
    """A trial record as `serray tune` writes it: ``objective`` (what ranked the trial) and
    ``val_ua_final`` (mean over folds of each fold's best-epoch validation UA) differ."""
    io.write_json({"trial_id": tid, "objective": objective, "objective_kind": kind, "objective_source": "epochs",
                   "val_ua_final": fold_best_mean, "finished": "completed", "started_at": 100.0,
                   "ended_at": 160.0 + int(tid[1:]), "epochs": 4, "test_ua": 0.4, **extra},
                  d / "trials" / f"{tid}.json")


def _report(w, d):
    r = CliRunner().invoke(main, ["report", str(w), "--tune", str(d)])
    assert r.exit_code == 0, r.output
    out = w / "reports" / f"tune__{d.name}"
    return (out / "report.md").read_text(), pd.read_csv(out / f"tune__{d.name}.csv")


def test_tune_report_shows_the_objective_not_the_fold_best_value(tmp_path):
    d = tmp_path / "tune" / "exp"
    _trial(d, "t0", 0.55, 0.70)
    _trial(d, "t1", 0.60, 0.65)  # best by the objective, not by the fold-best value
    assert not (d / "leaderboard.csv").exists()
    text, table = _report(tmp_path, d)
    assert dict(zip(table["trial_id"], table["val_ua"])) == {"t0": 0.55, "t1": 0.60}
    assert "Best validation UA 60.0 % (trial t1" in text
    assert "at one common epoch" in text
    assert "mean over folds of the best-epoch validation UA" not in text


def test_tune_report_names_fold_best_and_old_records(tmp_path):
    d = tmp_path / "tune" / "fb"
    _trial(d, "t0", 0.5, 0.6, kind="fold-best")
    text, _ = _report(tmp_path, d)
    assert "each fold at its own best epoch" in text and "common epoch" not in text
    old = tmp_path / "tune" / "old"  # records from before `objective` was stored
    io.write_json({"trial_id": "t0", "val_ua_final": 0.5, "finished": "completed", "started_at": 1.0,
                   "ended_at": 2.0, "epochs": 3, "test_ua": 0.4}, old / "trials" / "t0.json")
    text, table = _report(tmp_path, old)
    assert table["val_ua"].tolist() == [0.5] and "mean over folds of the best-epoch validation UA" in text
