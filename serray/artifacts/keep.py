"""Writing a run's kept fold models (``serray train`` / ``serray seeds``) under ``W/models/<run>``.

Example:
    >>> feature_inputs({"x": "egemaps"}, lambda name: None)
    {'x': {'set': 'egemaps', 'params': {}}}
    >>> rows = [{"epoch": 1, "stage": 0, "best_epoch": 1}, {"epoch": 2, "stage": 0, "best_epoch": 1},
    ...         {"epoch": 3, "stage": 1, "best_epoch": 3}, {"epoch": 4, "stage": 1, "best_epoch": 3}]
    >>> stage_best_epochs(rows)
    [1, 1]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from serray.artifacts.fold_model import write_fold_model
from serray.workdir import Workdir

__all__ = ["feature_inputs", "stage_best_epochs", "write_kept_models", "prune_kept_models"]

log = logging.getLogger(__name__)


def feature_inputs(features: Mapping[str, str], params_for: Callable[[str], Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Input role -> ``{"set": feature set, "params": its extractor parameters}``."""
    return {role: {"set": name, "params": dict(params_for(name) or {})} for role, name in features.items()}


def stage_best_epochs(history: Sequence[Mapping[str, Any]]) -> list[int]:
    """Per stage of a torch fold's training ``history`` (its ``step()`` dicts), the epochs of
    that stage, counted from its start, that the weights it handed on went through: its best
    epoch within the stage, or all its epochs when nothing selected among them (no
    validation part); 0 when the stage never improved on an earlier stage's best
    (``stage_selection="all"``), so the next stage (or the final model) started from
    before it. Stages the fold never reached are left out. ``[]`` without stage rows."""
    first: dict[int, int] = {}
    best: dict[int, int] = {}
    for row in history:
        if "stage" not in row:
            continue
        stage = int(row["stage"])
        first.setdefault(stage, int(row["epoch"]))
        best[stage] = int(row["best_epoch"])  # its last row: what the stage handed on
    return [max(0, best[s] - first[s] + 1) for s in sorted(first)]


def write_kept_models(workdir: str | Path, run: str, config_id: str, seed: int, results: Sequence[Any],
                      features: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Write every result's kept model (``FoldResult.kept``) to
    :meth:`Workdir.fold_model <serray.workdir.Workdir.fold_model>` and drop it from the
    result (its memory is freed); results without one are skipped. Each ``model.json``
    records the fold's ``training.best_epoch``, ``epochs`` and, of a torch fold,
    ``stage_best_epochs`` (:func:`stage_best_epochs`): what ``serray export --refit``
    trains for. Returns the folders."""
    from serray.training.records import versions

    w, libs, out = Workdir(workdir), versions(), []
    for r in results:
        if getattr(r, "kept", None) is None:
            continue
        folder = w.fold_model(run, config_id, seed, r.index)
        stages = stage_best_epochs(r.history or [])
        training = {"best_epoch": int(r.best_epoch), "epochs": int(r.epochs), **({"stage_best_epochs": stages} if stages else {})}
        write_fold_model(folder, r.kept, features, versions=libs, run=run, training=training)
        r.kept = None
        out.append(folder)
    if out:
        log.info("kept %d fold model(s) under %s", len(out), w.models(run))
    return out


def prune_kept_models(workdir: str | Path, run: str, keep: Sequence[str]) -> list[str]:
    """Remove the kept models of ``run``'s configs not in ``keep`` (config ids; a search's
    ``--keep-models best``); returns the removed config ids."""
    import shutil

    folder, removed = Workdir(workdir).models(run), []
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        cid = d.name.rsplit("__seed", 1)[0]
        if d.is_dir() and "__seed" in d.name and cid not in set(keep):
            shutil.rmtree(d)
            removed.append(cid)
    if removed:
        log.info("removed the kept models of %d config(s) of %s (not kept: %s)", len(removed), run, ", ".join(removed))
    return removed
