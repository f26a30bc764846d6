"""Nested tuning: one search per outer fold, on that fold's training speakers only.

``serray tune MODEL --nested`` answers "what test UA does *tuning this model* give?",
the number a paper should report for a tuned model. A plain ``serray tune`` selects one
configuration on the validation UA pooled over every fold, and a LOSO fold's validation
speakers are other folds' test speakers, so the best trial's test UA is a non-nested
estimate. Here each outer fold runs its own Optuna search (TPE, the model's defaults
first, successive-halving pruning with ASHA's grace period and reduction factor) whose
objective is the UA on that fold's validation speakers, carved out of its training part;
its test speakers are never seen by the search. The winner of every fold (highest
validation UA among the trials that ran to the end) predicts that fold's test part, and
the pooled test UA over the winners is the nested estimate.

Each fold's search is sequential and seeded (the sampler's seed is derived from ``seed``
and the fold index), so the result does not depend on how folds are scheduled: the folds
run as parallel Ray tasks (one CPU each by default), or in this process for a
scikit-learn model without ``--address``.

Files, under ``W/tune/<name>``: ``folds/<i>.json`` (the fold's trials and winner) and
``folds/<i>.npz`` (the winner's validation and test logits), written when a fold's
search ends, so ``--resume`` skips finished folds; then ``nested.yaml`` and
``nested.csv`` (one row per fold: winner, validation UA, test UA). The winners'
predictions go to the predictions store and a run record to ``W/runs/<name>``, so
``serray report W --runs <name>,...`` compares the nested estimate with other systems.

Example:
    >>> from serray.training.spec import RunSpec
    >>> from serray.tune.options import SearchOptions
    >>> out = nested_tune(RunSpec("W", "mlp", features="egemaps"), SearchOptions(num_samples=20))  # doctest: +SKIP
    >>> out.pooled["ua"]                                                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io
from serray.training.executor import run_tasks, set_threads
from serray.training.records import clean, run_record, write_fold_predictions, write_nested_summary, write_run
from serray.training.resources import Resources
from serray.tune.options import SearchOptions, prepare_search
from serray.tune.state import check_settings, search_settings, write_search
from serray.workdir import Workdir

__all__ = ["NestedSearch", "NestedOutcome", "nested_tune", "search_fold"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NestedSearch:
    """What every outer fold's search needs (small; sent to each fold task)."""

    model: str
    base_config: Mapping[str, Any]
    space: Any
    num_samples: int
    grace_period: int
    reduction_factor: int
    max_epochs: int | None
    normalize: str
    seed: int
    device: str
    threads: int = 1


@dataclass
class NestedOutcome:
    """What :func:`nested_tune` produced (also on disk under :attr:`path`)."""

    name: str
    path: Path
    table: pd.DataFrame
    pooled: dict[str, float]
    mean: dict[str, float]
    record_path: Path
    seconds: float
    notes: list[str] = field(default_factory=list)


def _trial_config(search: NestedSearch, trial: Any) -> dict[str, Any]:
    from serray.training.trainer import check_config

    fixed = search.space.define_by_run(trial)
    cfg = {**dict(search.base_config), **search.space.decode({**trial.params, **fixed})}
    if search.max_epochs is not None and "epochs" in cfg:
        cfg["epochs"] = int(search.max_epochs)
    return check_config(search.model, cfg)


def search_fold(search: NestedSearch, inputs: Any, fold: Any) -> tuple[dict, Any]:
    """Run one outer fold's search; return ``(summary, winner's FoldResult)``.

    The objective is the fold's validation UA at the trainer's best epoch; for a model
    fitted after training (``ModelSpec.fitted_after_training``, e.g. ``mtl``'s ELM) it is
    the validation UA of the finalized model (every completed trial is finalised), so the
    back-end's keys count. The pruner sees the epochs' scores either way. A trial that
    the pruner stops keeps its score in the summary but cannot win.
    """
    import optuna

    from serray.models import registry
    from serray.training.trainer import fold_trainer

    if hasattr(inputs, "resolve"):
        inputs = inputs.resolve()
    if registry.get(search.model).backend == "torch":
        set_threads(search.threads)
    study = _study(search, fold)
    best: dict[str, Any] = {"value": -math.inf, "result": None}
    t0 = time.perf_counter()
    fitted = bool(registry.get(search.model).fitted_after_training)

    def objective(trial: Any) -> float:
        cfg = _trial_config(search, trial)
        trainer = fold_trainer(search.model, cfg, inputs, fold, normalize=search.normalize, seed=search.seed, device=search.device)
        m: dict = {}
        while not trainer.stopped:
            m = trainer.step()
            trial.report(float(np.nan_to_num(m["best_val_ua"], nan=0.0)), int(m["epoch"]))
            if not trainer.stopped and trial.should_prune():
                trial.set_user_attr("epochs", int(m["epoch"]))
                raise optuna.TrialPruned()
        result = trainer.finalize() if fitted else None
        value = float(np.nan_to_num(result.metrics()["val_ua"] if fitted else m.get("best_val_ua", math.nan), nan=0.0))
        trial.set_user_attr("epochs", int(m.get("epoch", 0)))
        if value > best["value"]:  # ties keep the earlier trial, as study.best_trial does
            best.update(value=value, result=result or trainer.finalize(), config=cfg, number=trial.number)
        return value

    study.optimize(objective, n_trials=int(search.num_samples))
    if best["result"] is None:
        raise RuntimeError(f"nested search of fold {fold.name}: no trial ran to the end")
    trials = [
        {"number": t.number, "state": t.state.name.lower(), "val_ua": t.value if t.value is not None else _last(t),
         "epochs": t.user_attrs.get("epochs"), "params": search.space.decode(t.params)}
        for t in study.trials
    ]
    summary = {
        "fold": int(fold.index), "name": str(fold.name), "n_trials": len(trials),
        "n_pruned": sum(t["state"] == "pruned" for t in trials),
        "winner": {"number": best["number"], "val_ua": best["value"], "config": best["config"]},
        "test_ua": best["result"].metrics()["test_ua"], "seconds": time.perf_counter() - t0, "trials": trials,
    }
    return summary, best["result"]


def _study(search: NestedSearch, fold: Any) -> Any:
    """The fold's Optuna study: TPE seeded by ``seed`` and the fold index, successive-halving
    pruning, the model's defaults (where the space holds them) enqueued first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=int(search.seed) * 1000 + int(fold.index)),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=search.grace_period, reduction_factor=search.reduction_factor),
    )
    point = search.space.point(search.base_config)
    if point:
        study.enqueue_trial(point)
    return study


def _last(trial: Any) -> float | None:
    values = trial.intermediate_values
    return float(values[max(values)]) if values else None


# -- files of a fold's finished search ------------------------------------------------
def _save_fold(folder: Path, summary: dict, res: Any) -> None:
    """The winner's logits (npz), then the summary (json, the proof that the fold is done)."""
    arrays = {
        "validation_ids": np.asarray(res.validation_ids, dtype=str), "validation_y": res.validation_y,
        "validation_logits": res.validation_logits, "test_ids": np.asarray(res.test_ids, dtype=str),
        "test_y": res.test_y, "test_logits": res.test_logits,
    }
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    io.write_bytes(buf.getvalue(), folder / f"{res.index}.npz")
    meta = {"classes": list(res.classes), "history": res.history, "best_epoch": res.best_epoch, "epochs": res.epochs,
            "seconds": res.seconds, "n_train": res.n_train, "threads": res.threads, "cpu": res.cpu,
            "model_record": res.model_record}
    io.write_json({**summary, "result": meta}, folder / f"{res.index}.json")


def _load_fold(folder: Path, index: int) -> tuple[dict, Any] | None:
    """A finished fold's ``(summary, FoldResult)``, or ``None`` if its search did not finish."""
    from serray.training.trainer import FoldResult

    js, npz = folder / f"{index}.json", folder / f"{index}.npz"
    if not (js.exists() and npz.exists()):
        return None
    summary = io.read_json(js)
    meta = summary.pop("result")
    with np.load(npz) as a:
        arrays = {k: a[k] for k in a.files}
    for k in ("validation_ids", "test_ids"):
        arrays[k] = arrays[k].astype(object)
    res = FoldResult(index=int(summary["fold"]), name=str(summary["name"]), classes=tuple(meta.pop("classes")), **arrays, **meta)
    return summary, res


# -- driver ----------------------------------------------------------------------------
def _run_searches(search: NestedSearch, exp: Any, todo: Sequence[Any], folder: Path, *,
                  resources: Resources) -> dict[int, tuple[dict, Any]]:
    """Search every fold of ``todo`` (Ray tasks, or here); save each as it finishes."""
    out: dict[int, tuple[dict, Any]] = {}

    def done(summary: dict, res: Any) -> None:
        _save_fold(folder, summary, res)
        out[res.index] = (summary, res)
        w = summary["winner"]
        log.info("nested fold %d/%d (%s): %d trials (%d pruned), winner #%d validation UA %.3f, test UA %.3f, %.0f s",
                 len(out), len(todo), res.name, summary["n_trials"], summary["n_pruned"], w["number"], w["val_ua"],
                 summary["test_ua"], summary["seconds"])

    if not resources.parallel:
        for fold in todo:
            done(*search_fold(search, exp.inputs, fold))
        return out
    from serray.training.actors import put_inputs

    resources.start_ray()  # a task no node can hold would wait forever: refused here
    shared = put_inputs(exp.inputs)
    jobs = [(fold.index, (search, shared, fold)) for fold in todo]
    request = resources.request()
    for _, (summary, res) in run_tasks(search_fold, jobs, num_cpus=request["cpu"], num_gpus=request["gpu"],
                                        custom=resources.fold_custom):
        done(summary, res)
    return out


def _fold_rows(found: Mapping[int, tuple[dict, Any]], searched: Sequence[str]) -> pd.DataFrame:
    rows = []
    for index in sorted(found):
        summary, res = found[index]
        m, w = res.metrics(), summary["winner"]
        rows.append({"fold": index, "name": summary["name"], "trials": summary["n_trials"], "pruned": summary["n_pruned"],
                     "winner": w["number"], "val_ua": w["val_ua"], "test_ua": m["test_ua"], "test_wa": m["test_wa"],
                     **{f"config/{k}": w["config"].get(k) for k in searched}})
    return pd.DataFrame(rows)


def nested_tune(
    run: Any,
    options: SearchOptions | None = None,
    *,
    command_line: str | None = None,
) -> NestedOutcome:
    """Nested estimate of a tuned model: one search per outer fold (see the module docstring).

    Args:
        run: The :class:`~serray.training.spec.RunSpec` (as for ``serray tune``).
        options: The :class:`~serray.tune.options.SearchOptions`, as for
            :func:`serray.tune.runner.tune_model`, with ``num_samples`` trials per outer
            fold, the default name ``nested-<model>-<features>-<protocol>-<labels>``,
            ``resume`` keeping the finished folds (refused with other settings than the
            search started with, ``num_samples`` included:
            :func:`serray.tune.state.check_settings`), and its
            :class:`~serray.training.resources.Resources`: each fold's search task gets
            ``fold_cpus`` (default 1) and ``fold_gpus`` (default 0); ``parallel`` runs
            the folds as Ray tasks (``True``) or here (``False``), by default here for a
            scikit-learn model without an ``address``.
        command_line: Stored in the run record.

    Raises:
        serray.tune.space.SearchSpaceError: Malformed space (before any training).
        FileExistsError: The experiment has finished folds and ``resume`` is not set.
        ValueError: ``options.scheduler`` is not ``"asha"``.
    """
    t0 = time.perf_counter()
    options = options or SearchOptions()
    if options.scheduler != "asha":
        raise ValueError(f"--scheduler {options.scheduler} does not apply to --nested (its searches run ASHA in-process)")
    prep = prepare_search(run, options, "nested")
    spec, sp, run, exp, name = prep.spec, prep.space, prep.run, prep.exp, prep.name
    out_dir = Workdir(run.workdir).tune(name)
    folder = out_dir / "folds"
    if folder.exists() and any(folder.glob("*.json")) and not options.resume:
        raise FileExistsError(f"{out_dir}: nested experiment {name!r} exists; pass --resume to continue it or --name NEW")
    res = options.resources.with_defaults(fold_cpus=1.0, fold_gpus=0.0)
    if res.parallel is None:
        res = res.replace(parallel=not (res.address is None and spec.backend == "sklearn"))
    search = NestedSearch(spec.name, prep.base, sp, int(options.num_samples), prep.grace, int(options.reduction_factor),
                          options.max_epochs, run.normalize, int(run.seed), res.device,
                          threads=max(1, int(res.request()["cpu"])))
    found = {f.index: got for f in exp.folds if (got := _load_fold(folder, f.index)) is not None}
    _check_nested_settings(out_dir, search_settings(prep, options, "nested"), bool(found))
    todo = [f for f in exp.folds if f.index not in found]
    notes = [f"resumed: {len(found)} of {len(exp.folds)} fold(s) already searched"] if found else []
    log.info("nested search: %d outer fold(s) x %d trial(s), pruning after %d epoch(s) (reduction factor %d); %d to do",
             len(exp.folds), options.num_samples, prep.grace, options.reduction_factor, len(todo))
    found.update(_run_searches(search, exp, todo, folder, resources=res))
    return _write_nested(prep, options, found, out_dir, notes, command_line, t0)


def _check_nested_settings(out_dir: Path, settings: dict, resumed: bool) -> None:
    """A resumed nested search must have the settings it started with (one line naming old -> new);
    a new one records them (:func:`serray.tune.state.check_settings`)."""
    if resumed:
        check_settings(out_dir, settings)
    else:
        write_search(out_dir, settings)


def _write_nested(prep: Any, options: SearchOptions, found: Mapping[int, tuple[dict, Any]], out_dir: Path,
                  notes: list[str], command_line: str | None, t0: float) -> NestedOutcome:
    """Pool the winners' test predictions; write predictions, run record, nested.csv and nested.yaml."""
    from serray.training.run import fold_table, pooled_metrics

    spec, sp, run, exp, name = prep.spec, prep.space, prep.run, prep.exp, prep.name
    results = [found[f.index][1] for f in exp.folds]
    table = _fold_rows(found, sp.names())
    m = exp.manifest
    pooled = pooled_metrics(results, exp.classes, {c: dict(zip(m["utt_id"], m[c].astype(str))) for c in ("gender", "corpus") if c in m})
    tab = fold_table(results)
    mean = {k: float(tab[f"test_{k}"].mean()) for k in ("ua", "wa", "f1")}
    pred_path, _ = write_fold_predictions(run.workdir, results, run=name, config_id="nested", seed=run.seed,
                                          classes=exp.classes)
    selection = ("nested: each outer fold's configuration was selected by its own search on that fold's validation "
                 "speakers (carved from its training part); its test speakers were never seen by the search")
    nested = {"num_samples": int(options.num_samples), "grace_period": prep.grace, "reduction_factor": int(options.reduction_factor),
              "space": str(sp.source), "folds": [{k: v for k, v in found[f.index][0].items() if k != "trials"} for f in exp.folds]}
    extra = {"selection": selection, "nested": clean(nested), "predictions": str(pred_path.relative_to(Path(run.workdir))),
             "command_line": command_line, "timings": {"total_s": time.perf_counter() - t0}}
    record_path = write_run(run.workdir, name, exp.folds, run_record(run, exp, name, {}, "nested", results, pooled, mean, extra))
    summary = {"model": spec.name, **run.record(), "experiment": name, "selection": selection,
               "test_ua_pooled": pooled["ua"], "test_wa_pooled": pooled["wa"], "test_ua_fold_mean": mean["ua"],
               "test_wa_fold_mean": mean["wa"], "folds": clean(table.to_dict(orient="records"))}
    write_nested_summary(out_dir, table, summary)
    log.info("nested estimate of %s: pooled test UA %.4f WA %.4f (fold mean UA %.4f)", name, pooled["ua"], pooled["wa"], mean["ua"])
    return NestedOutcome(name, out_dir, table, {k: pooled[k] for k in ("ua", "wa", "f1")}, mean, record_path,
                         time.perf_counter() - t0, notes)
