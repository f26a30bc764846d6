"""Progress of a Tune experiment from its trial records (``W/tune/<experiment>/trials/*.json``).

One row per trial: its validation UA (the search's objective: the leaderboard's value
when there is one, else the trial record's ``objective``; records from before it was
stored give ``val_ua_final``, the mean over folds of the best-epoch validation UA), when
it ended, how many epochs it ran, whether ASHA stopped it, and its test UA (shown, never
used to select). The report's text names the objective the records say was used
(``objective_kind``, ``objective_source``; :func:`objective_text`).
The best validation UA so far is taken over trials in order of completion and over
wall time since the first trial started.

Example:
    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "trials").mkdir()
    >>> for i, (v, fin) in enumerate([(0.5, "completed"), (0.4, "stopped by scheduler")]):
    ...     _ = (d / "trials" / f"t{i}.json").write_text(json.dumps({"trial_id": f"t{i}", "val_ua_final": v,
    ...          "finished": fin, "started_at": 100.0 + i, "ended_at": 160.0 + 60 * i, "epochs": 3, "test_ua": 0.4}))
    >>> t = trial_table(d)
    >>> t["stopped"].tolist(), t["best_so_far"].tolist()
    ([False, True], [0.5, 0.5])
    >>> objective_text(t)
    'mean over folds of the best-epoch validation UA (val_ua_final: trial records from before the objective was recorded)'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from serray import io

__all__ = ["trial_table", "tune_section", "objective_text", "OBJECTIVE_TEXT"]

#: What each objective (``objective_kind``, or ``finalized`` for ``objective_source``) measures.
OBJECTIVE_TEXT = {
    "common-epoch": "the validation UA pooled over every fold's validation utterances at one common epoch "
                    "(the best epoch of that pooled curve)",
    "fold-best": "the validation UA pooled over every fold's validation utterances, each fold at its own best epoch",
    "finalized": "the validation UA of the finalized predictions (each fold at its own best epoch, then its "
                 "back-end fitted), pooled over all folds",
    None: "mean over folds of the best-epoch validation UA (val_ua_final: trial records from before the objective "
          "was recorded)",
}


def trial_table(experiment_dir: str | Path) -> pd.DataFrame:
    """Trials of one experiment, in order of completion (see the module docstring).

    Raises:
        FileNotFoundError: No trial records in the folder.
    """
    d = Path(experiment_dir)
    paths = sorted((d / "trials").glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"{d}: no trial records under trials/; is this a `serray tune` experiment folder?")
    board = {}
    lb = d / "leaderboard.csv"
    if lb.exists():
        b = pd.read_csv(lb)
        board = dict(zip(b["trial_id"].astype(str), b["val_ua"]))
    rows = []
    for p in paths:
        r = io.read_json(p)
        tid = str(r.get("trial_id", p.stem))
        val = board.get(tid, r.get("objective", r.get("val_ua_final", np.nan)))
        kind = "finalized" if r.get("objective_source") == "finalized" else (r.get("objective_kind") if "objective" in r else None)
        rows.append({"trial_id": tid, "val_ua": float(val) if val is not None else np.nan,
                     "test_ua": r.get("test_ua", np.nan), "epochs": r.get("epochs"),
                     "stopped": "stopped" in str(r.get("finished", "")), "started_at": r.get("started_at", np.nan),
                     "ended_at": r.get("ended_at", np.nan), "seconds": r.get("seconds", np.nan),
                     "objective_kind": kind})
    t = pd.DataFrame(rows).sort_values(["ended_at", "trial_id"], kind="stable").reset_index(drop=True)
    t["order"] = np.arange(1, len(t) + 1)
    t["minutes"] = (t["ended_at"] - t["started_at"].min()) / 60.0
    t["best_so_far"] = t["val_ua"].cummax()
    return t


def objective_text(table: pd.DataFrame) -> str:
    """What the ``val_ua`` of :func:`trial_table` measures, from its ``objective_kind``
    column (several, when the records disagree, each with its trials)."""
    kinds = list(dict.fromkeys(table["objective_kind"].where(table["objective_kind"].notna(), None)))
    if len(kinds) == 1:
        return OBJECTIVE_TEXT.get(kinds[0], str(kinds[0]))
    counts = table["objective_kind"].fillna("none").value_counts()
    return "; ".join(f"{OBJECTIVE_TEXT.get(k if k != 'none' else None, k)} ({counts[k]} trial(s))" for k in counts.index)


def tune_section(experiment_dir: str | Path, out: Path):
    """A report section (:class:`~serray.report.document.Document`) with table and figure."""
    from serray.report.document import Document
    from serray.report.figures import tune_progress_figure

    d = Path(experiment_dir)
    t = trial_table(d)
    doc = Document("")
    n_stop = int(t["stopped"].sum())
    best = t.loc[t["val_ua"].idxmax()]
    doc.heading(f"Tune progress: {d.name}")
    doc.text(f"{len(t)} trials, {n_stop} stopped early by ASHA. Best validation UA {100 * best['val_ua']:.1f} % "
             f"(trial {best['trial_id']}, test UA {100 * float(best['test_ua']):.1f} %; test UA is shown but never "
             "used for selection). Validation UA = the search's objective: " + objective_text(t) + ".")
    png = tune_progress_figure(t, f"{d.name}: best validation UA over trials and wall time", out / f"tune__{d.name}")
    doc.figure(png.name, f"Tune progress of {d.name}: each trial's validation UA (x: stopped by ASHA) and the best so far")
    shown = t[["order", "trial_id", "val_ua", "best_so_far", "test_ua", "epochs", "stopped", "minutes"]].copy()
    for c in ("val_ua", "best_so_far", "test_ua"):
        shown[c] = (100 * shown[c].astype(float)).round(1)
    shown["minutes"] = shown["minutes"].round(2)
    doc.table(shown, "Trials in order of completion (UA in %):")
    io.write_text(t.to_csv(index=False), out / f"tune__{d.name}.csv")
    return doc
