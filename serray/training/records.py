"""Records: the one module that writes what fold training produced.

Every driver of :mod:`serray.training.executor` (``serray train``, ``seeds``, a tune
trial, a nested search) ends here:

* :func:`write_fold_predictions` - the folds' validation and test logits as one part of
  the predictions store;
* :func:`run_record` / :func:`write_run` - a run's record (``W/runs/<run>/record.json``)
  and its fold membership (``folds.parquet``);
* :func:`seed_record` / :func:`write_model_records` - a seed run's record and what the
  model reported per fold, with each torch fold's epochs (:func:`fold_epochs`), one file
  per (config, seed);
* :func:`write_trial_record` - a tune trial's record (``<experiment>/trials/<id>.json``);
* :func:`write_search_outcome` - a search's leaderboard and ``best.yaml``;
* :func:`write_nested_summary` - a nested search's ``nested.csv`` and ``nested.yaml``.

Every file is written atomically (:mod:`serray.io`); paths come from
:class:`serray.workdir.Workdir`.

Example:
    >>> clean({"a": float("nan"), "b": [1.0, float("nan")]})
    {'a': None, 'b': [1.0, None]}
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io
from serray.workdir import Workdir

if TYPE_CHECKING:
    from serray.training.experiment import Experiment
    from serray.training.spec import RunSpec
    from serray.training.trainer import FoldResult

__all__ = ["versions", "clean", "aux_summary", "wave_record", "fold_metrics", "write_fold_predictions", "run_record", "write_run",
           "fold_epochs", "fold_cpus", "model_record_path", "write_model_records", "read_model_records", "seed_record",
           "write_trial_record", "write_search_outcome", "write_nested_summary"]


def versions() -> dict[str, str]:
    """Python's and the main libraries' versions (recorded with every run)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("serray", "torch", "scikit-learn", "ray", "numpy", "pandas"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def clean(value: Any) -> Any:
    """NaN -> None recursively, for JSON."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def aux_summary(table: Any) -> dict[str, dict[str, Any]]:
    """Per auxiliary label: its column, classes and on how many utterances it is known
    (corpus utterances: augmented copies are not counted)."""
    copy_of = getattr(table, "copy_of", None)
    own = slice(None) if copy_of is None else np.asarray([c is None for c in copy_of], dtype=bool)
    return {
        role: {
            "column": table.aux_columns.get(role),
            "classes": list(table.aux_names.get(role, ())),
            "known": int((codes[own] >= 0).sum()),
            "unknown": int((codes[own] < 0).sum()),
        }
        for role, codes in table.aux.items()
    }


def wave_record(exp: Any, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{"wave_augment": {tag: spec, options, copies loaded}}`` for the tags ``cfg`` trains on
    (:mod:`serray.training.wave`); empty without any, so such records stay as they were."""
    from serray.training.wave import wave_tags

    tags = wave_tags(cfg.get("wave_augment"))
    known = getattr(exp, "wave_augment", None) or {}
    return {"wave_augment": {t: known.get(t) for t in tags}} if tags else {}


def fold_metrics(results: Sequence[FoldResult]) -> list[dict[str, Any]]:
    """Per fold: epochs, best epoch, stage and loss terms at the best epoch, val/test metrics."""
    rows = []
    for r in results:
        best = r.history[r.best_epoch - 1] if 0 < r.best_epoch <= len(r.history) else {}
        extra = {"loss_parts": best.get("loss_parts") or {}, "stage": best.get("stage")} if "stage" in best else {}
        if r.model_record:
            extra["model"] = r.model_record
        rows.append({"fold": r.index, "name": r.name, "epochs": r.epochs, "best_epoch": r.best_epoch, **extra, **r.metrics()})
    return rows


def write_fold_predictions(workdir: str | Path, results: Sequence[FoldResult], *, run: str, config_id: str, seed: int,
                           classes: Sequence[str]) -> tuple[Path, pd.DataFrame]:
    """The folds' validation and test logits as one part of the predictions store; ``(path, frame)``."""
    from serray.predictions import write_predictions

    preds = pd.concat([r.predictions_frame() for r in results], ignore_index=True)
    path = write_predictions(workdir, preds, run=run, config_id=config_id, seed=seed, classes=list(classes))
    return path, preds


def fold_epochs(results: Sequence[FoldResult]) -> list[dict[str, int]]:
    """Per torch fold: epochs trained and the epoch whose weights were kept (scikit-learn folds,
    ``threads`` None, have no epochs and are left out). ``best_epoch == epochs`` means the
    model still improved on its last epoch (or ``early_stop=none`` kept the last weights).

    Example:
        >>> from serray.training.interface import FoldResult
        >>> e = np.zeros((0,))
        >>> r = FoldResult(0, "f0", ("a", "b"), e, e, e, e, e, e, best_epoch=4, epochs=9, threads=1)
        >>> fold_epochs([r, FoldResult(1, "f1", ("a", "b"), e, e, e, e, e, e, best_epoch=1, epochs=1)])
        [{'fold': 0, 'epochs': 9, 'best_epoch': 4}]
    """
    return [{"fold": int(r.index), "epochs": int(r.epochs), "best_epoch": int(r.best_epoch)}
            for r in results if r.threads is not None]


def run_record(run: RunSpec, exp: Experiment, name: str, cfg: dict, cid: str, results: Sequence[FoldResult],
               pooled: dict, mean: dict, extra: dict) -> dict:
    """The record of one run (one config and seed on every fold), NaN-free."""
    spec = exp.spec
    epochs = [{"seed": int(run.seed), **e} for e in fold_epochs(results)]
    return clean({
        "run": name,
        "model": spec.name,
        "backend": spec.backend,
        "config": cfg,
        "config_id": cid,
        "preset": run.preset,
        "seed": int(run.seed),
        **run.record(),  # features, feature_params, protocol, labels, normalize, k, fold_seed
        "feature_sets": dict(exp.features),
        "feature_kind": exp.feature_kind,
        "domain_column": exp.domain_column,
        "aux_labels": aux_summary(exp.inputs.table),
        "classes": exp.classes,
        "corpora": sorted(exp.manifest["corpus"].unique().tolist()),
        "n_utterances": int(len(exp.manifest)),
        "excluded_without_features": exp.excluded,
        **wave_record(exp, cfg),
        # CPU numbers are reproducible for the same seed, thread count *and* CPU model; record them
        "torch_threads": sorted({r.threads for r in results if r.threads is not None}) or None,
        "cpus": fold_cpus(results),
        "versions": versions(),
        **extra,
        "metrics": {"pooled": pooled, "mean": mean, "folds": fold_metrics(results),
                    **({"fold_epochs": epochs} if epochs else {})},
        "history": {str(r.index): r.history for r in results},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def write_run(workdir: str | Path, name: str, folds: Sequence[Any], record: Mapping[str, Any]) -> Path:
    """Write ``W/runs/<name>/folds.parquet`` and ``record.json``; returns the record's path."""
    from serray.protocols import folds_to_frame

    w = Workdir(workdir)
    io.write_parquet(folds_to_frame(folds), w.run_folds(name))
    io.write_json(dict(record), w.run_record(name))
    return w.run_record(name)


def model_record_path(workdir: str | Path, run_name: str, cid: str, seed: int) -> Path:
    """``W/runs/<run>/model_records/<config>__seed<s>.json``: what the model reported per fold."""
    return Workdir(workdir).run(run_name) / "model_records" / f"{cid}__seed{seed}.json"


def write_model_records(workdir: str | Path, run_name: str, cid: str, seed: int, results: Sequence[FoldResult]) -> None:
    """What the model reported per fold (``fold_record()``) and each torch fold's epochs
    (:func:`fold_epochs`), one file per (config, seed)."""
    folds = [{"fold": r.index, "name": r.name, **r.model_record} for r in results if r.model_record]
    epochs = fold_epochs(results)
    if folds or epochs:
        io.write_json({"config_id": cid, "seed": int(seed), "folds": folds, "epochs": epochs, "cpus": fold_cpus(results)},
                      model_record_path(workdir, run_name, cid, seed))


def fold_cpus(results: Sequence[FoldResult]) -> list[str] | None:
    """The CPUs the torch folds trained on (:func:`serray.training.interface.cpu_name`), sorted;
    ``None`` for scikit-learn.

    Example:
        >>> from serray.training.interface import FoldResult
        >>> e = np.zeros((0,))
        >>> fold_cpus([FoldResult(0, "f0", ("a", "b"), e, e, e, e, e, e, threads=1, cpu="X (AVX2)")])
        ['X (AVX2)']
    """
    return sorted({r.cpu for r in results if r.cpu}) or None


def read_model_records(workdir: str | Path, run_name: str, cid: str, seeds: Sequence[int]) -> dict[int, dict]:
    """Seed -> the file :func:`write_model_records` wrote for it (``folds``: what the model
    reported per fold; ``epochs``: each torch fold's epochs), read once; seeds without one left out."""
    paths = {int(s): model_record_path(workdir, run_name, cid, s) for s in seeds}
    return {s: io.read_json(p) for s, p in paths.items() if p.exists()}


def seed_record(run: RunSpec, exp: Experiment, *, name: str, variant: str, cfg: dict, cid: str, table: pd.DataFrame,
                settings: Mapping[str, Any]) -> dict:
    """A seed run's record: config, data, per-seed test metrics and their mean and spread over
    every seed ``table`` holds for ``variant`` (the store's, not only the seeds asked for)."""
    t = table[(table["variant"] == variant) & (table["split"] == "test")]
    seeds = sorted(int(s) for s in t["seed"])
    stored = read_model_records(run.workdir, name, cid, seeds)
    models = {str(s): f["folds"] for s, f in stored.items() if f["folds"]}
    epochs = [{"seed": s, **e} for s, f in stored.items() for e in f.get("epochs") or []]  # seeds trained before: none
    cpus = {str(s): f["cpus"] for s, f in stored.items() if f.get("cpus")}  # seeds trained before 2026-12-08: none
    return {
        "run": name,
        "model": exp.spec.name,
        "variant": variant,
        "config": cfg,
        "config_id": cid,
        "seeds": seeds,
        **run.record(),
        "aux_labels": aux_summary(exp.inputs.table),
        "classes": exp.classes,
        "n_utterances": int(len(exp.manifest)),
        **wave_record(exp, cfg),
        "metrics": {
            "test_ua_mean": float(t["ua"].mean()),
            "test_ua_std": float(t["ua"].std(ddof=1)) if len(t) > 1 else 0.0,
            "test_wa_mean": float(t["wa"].mean()),
            "test_ua_fold_mean": float(t["ua_fold"].mean()),
            "test_wa_fold_mean": float(t["wa_fold"].mean()),
            "per_seed": t[["seed", "ua", "wa", "f1", "ua_fold", "wa_fold"]].to_dict(orient="records"),
            **({"fold_epochs": epochs} if epochs else {}),
        },
        **({"model_records": models} if models else {}),
        **({"cpus": cpus} if cpus else {}),
        "settings": dict(settings),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_trial_record(record_dir: str | Path, trial_id: str, record: Mapping[str, Any]) -> Path:
    """A tune trial's record, ``<record_dir>/<trial_id>.json`` (the proof that the trial finished)."""
    path = Path(record_dir) / f"{trial_id}.json"
    io.write_json(dict(record), path)
    return path


def write_search_outcome(out_dir: Path, board: pd.DataFrame, best: Mapping[str, Any]) -> Path:
    """A search's leaderboard (parquet and CSV) and ``best.yaml``; returns best.yaml's path."""
    io.write_parquet(board, out_dir / "leaderboard.parquet")
    io.write_text(board.to_csv(index=False), out_dir / "leaderboard.csv")
    path = out_dir / "best.yaml"
    io.write_yaml(dict(best), path)
    return path


def write_nested_summary(out_dir: Path, table: pd.DataFrame, summary: Mapping[str, Any]) -> Path:
    """A nested search's ``nested.csv`` (one row per outer fold) and ``nested.yaml``; returns the latter."""
    io.write_text(table.to_csv(index=False), out_dir / "nested.csv")
    io.write_yaml(dict(summary), out_dir / "nested.yaml")
    return out_dir / "nested.yaml"
