"""Writing a run's kept fold models (``serray train`` / ``serray seeds``) under ``W/models/<run>``.

Example:
    >>> feature_inputs({"x": "egemaps"}, lambda name: None)
    {'x': {'set': 'egemaps', 'params': {}}}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from serray.artifacts.fold_model import write_fold_model
from serray.workdir import Workdir

__all__ = ["feature_inputs", "write_kept_models", "prune_kept_models"]

log = logging.getLogger(__name__)


def feature_inputs(features: Mapping[str, str], params_for: Callable[[str], Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Input role -> ``{"set": feature set, "params": its extractor parameters}``."""
    return {role: {"set": name, "params": dict(params_for(name) or {})} for role, name in features.items()}


def write_kept_models(workdir: str | Path, run: str, config_id: str, seed: int, results: Sequence[Any],
                      features: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Write every result's kept model (``FoldResult.kept``) to
    :meth:`Workdir.fold_model <serray.workdir.Workdir.fold_model>` and drop it from the
    result (its memory is freed); results without one are skipped. Each ``model.json``
    records the fold's ``training.best_epoch`` and ``epochs`` (what ``serray export --refit``
    trains for). Returns the folders."""
    from serray.training.records import versions

    w, libs, out = Workdir(workdir), versions(), []
    for r in results:
        if getattr(r, "kept", None) is None:
            continue
        folder = w.fold_model(run, config_id, seed, r.index)
        write_fold_model(folder, r.kept, features, versions=libs, run=run,
                         training={"best_epoch": int(r.best_epoch), "epochs": int(r.epochs)})
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
