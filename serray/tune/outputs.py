"""What a search leaves on disk: its leaderboard and best.yaml, and the reconciliation of a resume.

The leaderboard merges Tune's results with serray's trial records
(:func:`leaderboard`); :func:`write_outcome` writes it and ``best.yaml`` through
:mod:`serray.training.records`. Before a resume, :func:`reconcile_for_resume` counts the
trials kept and restarted and sets aside predictions cut short (see :mod:`serray.tune.runner`).

Example:
    >>> check_objective("common-epoch")
    >>> check_objective("best")
    Traceback (most recent call last):
    ...
    ValueError: unknown tune objective 'best'; choose one of common-epoch, fold-best
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from serray import io
from serray.training.records import write_search_outcome
from serray.tune.trial import OBJECTIVE, OBJECTIVES, record_objective
from serray.workdir import Workdir

__all__ = ["check_objective", "leaderboard", "write_outcome", "reconcile_for_resume"]


#: best.yaml's ``selection`` line per objective.
_SELECTION = {
    "common-epoch": ("highest validation UA pooled over all folds' validation utterances at one common epoch "
                     "(test data not used)"),
    "fold-best": ("highest validation UA pooled over all folds' validation utterances, each fold at its own best "
                  "epoch (test data not used; optimistic, see serray.tune.runner)"),
}


#: Added to best.yaml's ``selection`` for a model fitted after training (module docstring).
_FINALIZED_SELECTION = ("; the model is fitted after training (e.g. an ELM back-end), so each trial is scored by "
                        "the validation UA of its finalized predictions, pooled over all folds")


def check_objective(objective: str, record_dir: Path | None = None) -> None:
    """``ValueError`` for an unknown objective, or one that differs from the kept trials'
    (a resumed search must rank every trial by the same score)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown tune objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if record_dir is None or not record_dir.is_dir():
        return
    for path in sorted(record_dir.glob("*.json")):
        kept = io.read_json(path).get("objective_kind", "fold-best")
        if kept != objective:
            raise ValueError(f"{path}: this search ranked its trials by objective {kept!r}; resume it with "
                             f"--objective {kept} or start another with --name NEW")


def _board_row(tid: str, val_ua: float, status: str, rec: Mapping[str, Any], m: Mapping[str, Any],
               cfg: Mapping[str, Any], searched: Sequence[str]) -> dict:
    """One leaderboard row: serray's trial record first, Tune's last result ``m`` where it has none."""
    return {
        "trial_id": tid, "val_ua": val_ua,
        "val_ua_fold_best": rec.get("val_ua_fold_best", m.get("val_ua_fold_best", math.nan)),
        "test_ua": rec.get("test_ua", math.nan), "test_wa": rec.get("test_wa", math.nan),
        "epochs": rec.get("epochs", m.get("training_iteration", 0)),
        "seconds": rec.get("seconds", m.get("time_total_s", math.nan)),
        "status": status,
        **{f"config/{k}": (str(cfg.get(k)) if isinstance(cfg.get(k), list) else cfg.get(k)) for k in searched},
    }


def _record_row(tid: str, rec: dict, searched: Sequence[str]) -> dict:
    """A leaderboard row from a trial record alone (a trial Tune's restored state does not know)."""
    status = "completed before an interruption" if rec.get("finished") == "completed" else "stopped by ASHA before an interruption"
    return _board_row(tid, record_objective(rec), status, rec, {}, rec.get("config") or {}, searched)


def leaderboard(results: Any, record_dir: Path, searched: Sequence[str], space: Any = None, extra: Sequence[str] = ()) -> pd.DataFrame:
    rows = [_record_row(tid, io.read_json(record_dir / f"{tid}.json"), searched) for tid in extra if (record_dir / f"{tid}.json").exists()]
    for r in results:
        m = dict(r.metrics or {})
        tid = m.get("trial_id") or (r.path and Path(r.path).name.split("_")[1]) or "?"
        rec_path = record_dir / f"{tid}.json"
        rec = io.read_json(rec_path) if rec_path.exists() else {}
        if r.error is not None:
            status = f"error: {type(r.error).__name__}"
        elif rec.get("finished") == "stopped by scheduler":
            status = f"stopped by ASHA at epoch {rec.get('epochs', m.get('training_iteration'))}"
        elif rec:
            status = "completed"
        else:
            status = "incomplete"
        cfg = space.decode(r.config or {}) if space is not None else (r.config or {})
        # the record's objective (a trial finalised after its last report may be scored there, module docstring)
        rows.append(_board_row(tid, rec.get("objective", m.get(OBJECTIVE, math.nan)), status, rec, m, cfg, searched))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["val_ua", "trial_id"], ascending=[False, True], na_position="last").reset_index(drop=True)


def _state_trials(path: Path) -> dict[str, str] | None:
    """Trial id -> status in Tune's newest saved experiment state (``None`` without one)."""
    states = sorted(path.glob("experiment_state-*.json"))  # Tune restores the newest by name
    if not states:
        return None
    out = {}
    for entry in json.loads(states[-1].read_text())["trial_data"]:
        trial = json.loads(entry[0])
        out[str(trial["trial_id"])] = str(trial.get("status"))
    return out


def reconcile_for_resume(path: Path, record_dir: Path, workdir: Path, experiment: str) -> tuple[str, list[str]]:
    """Before a resume: count kept and restarting trials; set cut-short results aside.

    Returns the line that says what the resume keeps and restarts, and the finished
    trials Tune's saved state does not know (kept, and listed in the leaderboard; Tune
    runs as many trials again to reach its count).
    """
    states = _state_trials(path) or {}
    records = {p.stem for p in record_dir.glob("*.json")} if record_dir.exists() else set()
    kept = sorted(records & set(states))
    restart = sorted(set(states) - records)
    unknown = sorted(records - set(states))
    # predictions without a record are a result write cut short: its trial restarts (or is gone)
    for part in sorted((Workdir(workdir).predictions_dir / experiment).glob("*__seed*.parquet")):
        if part.name.split("__")[0] not in records:
            (path / "orphaned").mkdir(parents=True, exist_ok=True)
            part.replace(path / "orphaned" / part.name)
            if io.checksum_path(part).exists():  # its checksum goes with it
                io.checksum_path(part).replace(path / "orphaned" / io.checksum_path(part).name)
    saved = [t for t in restart if any(path.glob(f"*_{t}_*/checkpoint_*/trial.json"))]  # serray.tune.checkpoint
    line = (f"resuming {path}: {len(kept) + len(unknown)} finished trial(s) kept, {len(restart)} restart "
            f"({len(saved)} from their last checkpoint, {len(restart) - len(saved)} from their first epoch)")
    if unknown:
        line += (f" ({len(unknown)} of the finished trials, {', '.join(unknown)}, ended after Tune's last saved state: "
                 "they stay in the leaderboard and Tune runs as many new trials)")
    return line, unknown


def write_outcome(board: pd.DataFrame, prep: Any, out_dir: Path, record_dir: Path, objective: str,
                   path: str, notes: list[str]) -> tuple[dict, Path]:
    """Write the leaderboard (parquet and CSV) and best.yaml; return best.yaml's content and path."""
    if board.empty or board["val_ua"].isna().all():
        raise RuntimeError(f"experiment {prep.name}: no trial reported a validation UA; see the errors above and {path}")
    top = board.iloc[0]
    best_rec_path = record_dir / f"{top['trial_id']}.json"
    best_cfg = io.read_json(best_rec_path)["config"] if best_rec_path.exists() else {
        **prep.base, **{k[len('config/'):]: v for k, v in top.items() if k.startswith("config/") and v is not None}
    }
    best = {
        "model": prep.spec.name,
        **prep.run.record(),
        **prep.run.corpus_selection(),  # seeds/train from this file use the same corpora
        "experiment": prep.name,
        "trial_id": str(top["trial_id"]),
        "selection": _SELECTION[objective] + (_FINALIZED_SELECTION if prep.spec.fitted_after_training else ""),
        "estimate": ("non-nested: one configuration was chosen on every fold's validation speakers, and a fold's "
                     "validation speakers are other folds' test speakers; `serray tune --nested` gives the nested "
                     "estimate of the tuned model"),
        "val_ua": float(top["val_ua"]),
        "test_ua": float(top["test_ua"]),
        "config": best_cfg,
    }
    best_yaml = write_search_outcome(out_dir, board, best)
    if best.get("transductive"):
        notes.append(f"transductive: {best['transductive_reason']}")
    return best, best_yaml
