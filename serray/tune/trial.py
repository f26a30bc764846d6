"""What one tune trial computes and reports, without Ray: its context, its config, its
per-epoch result and its record.

:class:`serray.tune.trainable.FoldsTrainable` trains a trial's folds through the fold
executor (:class:`serray.training.executor.FoldActors`) and asks this module what to
report: :func:`epoch_result` for each epoch (the objective, :data:`OBJECTIVES`, see
:mod:`serray.tune.runner`), :func:`trial_summary` and :func:`trial_record` when the trial
ends. :func:`report_epochs` says where reports end.

Example:
    >>> report_epochs(8, 30, 2)
    (8, 16, 30)
    >>> common_epoch([0.4, 0.6, 0.55, 0.6])
    (2, 0.6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import metrics

__all__ = ["FAULT_ENV", "FAULT_EPOCH_ENV", "FAULT_HANG_ENV", "OBJECTIVE", "OBJECTIVES", "REPORT_EVERY_S", "TuneContext", "trial_config", "report_epochs", "common_epoch",
           "fitted_after_training", "finalized_objective", "record_objective", "best_recorded", "epoch_result", "trial_summary",
           "KEPT_KEYS"]

#: The key of the objective Optuna and ASHA see.
OBJECTIVE = "val_ua"
#: What ``val_ua`` (the searcher's and ASHA's objective) is; see :mod:`serray.tune.runner`.
OBJECTIVES = ("common-epoch", "fold-best")
#: A trial reports to Tune at least this often (seconds of training at the last epochs'
#: pace), also between ASHA's decision points, so progress shows and a time budget holds.
REPORT_EVERY_S = 10.0
#: Testing hook: when set to a folder, every trial raises once in its first epoch (a
#: marker file per trial in that folder records that it did), to exercise Tune's retries.
FAULT_ENV = "SERRAY_TUNE_INJECT_FAULT"
#: With :data:`FAULT_ENV`: the fault comes at the first report starting at or after this
#: many epochs (default 0: before the first epoch), so a retry can resume from a checkpoint.
FAULT_EPOCH_ENV = "SERRAY_TUNE_FAULT_EPOCH"
#: With :data:`FAULT_ENV`: instead of raising, the first trial to reach the fault writes
#: ``hang.fault`` (its trial id, epoch and process id) in that folder and sleeps this many
#: seconds (a window to kill its node or the driver).
FAULT_HANG_ENV = "SERRAY_TUNE_FAULT_HANG_S"
#: What a kept trial (finished before an interruption) reports again from its record.
KEPT_KEYS = ("test_ua", "test_wa", "test_f1", "test_ua_fold_mean", "val_ua_final", "val_ua_finalized", "fold_seconds")


@dataclass(frozen=True)
class TuneContext:
    """What every trial needs besides the features (small; sent once per experiment).

    ``on_result_write(trial_id)``, when given, runs in the trial's process after its
    predictions are written and before its record (tests use it to interrupt a write).
    """

    workdir: str
    experiment: str
    model: str
    base_config: Mapping[str, Any]
    folds: Sequence[Any]
    classes: Sequence[str]
    normalize: str
    seed: int
    device: str
    fold_cpus: float
    fold_gpus: float
    folds_per_actor: int
    max_epochs: int | None
    record_dir: str
    space: Any = None
    objective: str = "common-epoch"
    pool: Any = None  # serray.tune.pool.FoldPool: warm fold actors to borrow, if any
    report_at: tuple[int, ...] = ()  # epochs where a report must end (report_epochs); () = report every epoch
    on_result_write: Any = None
    checkpoint_at: tuple[int, ...] = ()  # epochs whose report saves a checkpoint (ASHA's rungs; serray.tune.checkpoint)
    checkpoint_every_s: float = 180.0  # and a report this long after the last checkpoint (0: only at checkpoint_at)
    finalize_on_stop: bool = True  # a trial stopped by the scheduler is finalised (ASHA); False: only a done one (PBT pauses)
    keep_models: str = "none"  # whose fold models are written to W/models/<experiment>: "all", "best" (so far) or "none"
    kept_features: Any = None  # input role -> {"set", "params"} of the kept models (serray.artifacts.keep.feature_inputs)


def trial_config(spec: Any, space: Any, base: Mapping[str, Any], max_epochs: int | None, config: Mapping[str, Any]) -> dict:
    """A trial's full, checked model config: ``base`` with the searcher's ``config``
    decoded over it, and ``epochs`` capped at ``max_epochs`` where given."""
    from serray.training.trainer import check_config

    params = space.decode(config) if space is not None else dict(config)
    cfg = {**dict(base), **params}
    if max_epochs is not None and "epochs" in cfg:
        cfg["epochs"] = int(max_epochs)
    return check_config(spec, cfg)


def report_epochs(grace: int, max_t: int, reduction_factor: int) -> tuple[int, ...]:
    """The epochs at which ASHA can act on a trial: its rungs (``grace`` times powers of
    ``reduction_factor``, as Ray's :class:`~ray.tune.schedulers.ASHAScheduler` with one
    bracket places them) and the epoch budget ``max_t``.

    A trial reports to Tune only at these epochs (and every :data:`REPORT_EVERY_S`
    seconds between them): ASHA sees the same values at the same epochs as with a report
    per epoch, so it stops the same trials, while a short search saves a round trip
    through Tune and a wait for the slowest fold actor at every other epoch.

    Example:
        >>> report_epochs(8, 30, 2)
        (8, 16, 30)
        >>> report_epochs(3, 3, 2)
        (3,)
    """
    rungs = int(np.log(max_t / grace) / np.log(reduction_factor) + 1)
    return tuple(sorted({int(grace * reduction_factor**k) for k in range(rungs)} | {int(max_t)}))


def common_epoch(curve: Sequence[float]) -> tuple[int, float]:
    """``(epoch, value)`` of the best point of a pooled validation curve (first maximum;
    1-based epoch; ``(0, nan)`` while the curve has no finite point).

    Example:
        >>> common_epoch([0.4, 0.6, 0.55, 0.6])
        (2, 0.6)
    """
    vals = np.asarray(curve, dtype=float)
    if not len(vals) or np.isnan(vals).all():
        return 0, math.nan
    i = int(np.nanargmax(vals))
    return i + 1, float(vals[i])


def fitted_after_training(model: str) -> bool:
    """Whether the model's predictions change after training (``ModelSpec.fitted_after_training``)."""
    from serray.models import registry

    return bool(registry.get(model).fitted_after_training)


def finalized_objective(model: str, preds: pd.DataFrame, classes: Sequence[str], epochs_value: float) -> tuple[float, float]:
    """``(val_ua_finalized, objective)`` of a finalised trial: the validation UA pooled over
    every fold's finalized validation predictions, and the trial's objective (that UA for a
    model fitted after training, else ``epochs_value``, the last per-epoch objective)."""
    val = preds[preds["split"] == "validation"]
    finalized = metrics.unweighted_average_recall(val["label"].to_numpy(), val["pred"].to_numpy(), list(classes)) if len(val) else math.nan
    return float(finalized), float(finalized if fitted_after_training(model) else epochs_value)


def record_objective(rec: Mapping[str, Any]) -> float:
    """The objective a finished trial reported last, from its record (older records: ``val_ua_final``)."""
    return float(rec.get("objective", rec.get("val_ua_final", math.nan)))


def best_recorded(record_dir: str | Path) -> float:
    """The best objective of the finished trials recorded in ``record_dir`` (``nan``: none yet)."""
    from serray import io

    values = []
    for path in Path(record_dir).glob("*.json") if Path(record_dir).is_dir() else []:
        try:
            values.append(record_objective(io.read_json(path)))
        except (ValueError, OSError):  # being written, or not a record
            continue
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


def epoch_result(history: Sequence[Sequence[dict]], val_curve: list[float], objective: str) -> dict:
    """The result of the epoch just added to every fold's ``history``; appends that epoch's
    point of the pooled validation curve to ``val_curve``."""
    from serray.training.trainer import pooled_val_ua

    last = [h[-1] for h in history]
    best_steps = [h[max(0, int(m.get("best_epoch", len(h))) - 1)] for h, m in zip(history, last)]
    best = [b.get("val_ua", math.nan) for b in best_steps]
    pooled = pooled_val_ua(best_steps)
    if math.isnan(pooled):
        pooled = float(np.nanmean(best))
    val_curve.append(pooled_val_ua(last))
    common = common_epoch(val_curve)
    result = {
        OBJECTIVE: common[1] if objective == "common-epoch" and not math.isnan(common[1]) else pooled,
        "val_ua_common_epoch": common[1],
        "common_epoch": common[0],
        "val_ua_fold_best": pooled,
        "val_ua_fold_mean": float(np.nanmean(best)),
        "val_ua_fold_std": float(np.nanstd(best)),
        "val_ua_epoch": float(np.nanmean([m.get("val_ua", math.nan) for m in last])),
        "val_loss": float(np.nanmean([m.get("val_loss", math.nan) for m in last])),
        "train_loss": float(np.nanmean([m.get("train_loss", math.nan) for m in last])),
        "folds_active": sum(not h[-1]["stopped"] for h in history),
    }
    parts = [m.get("loss_parts") or {} for m in last]
    for key in sorted({k for p in parts for k in p}):
        result[f"train_loss_{key}"] = float(np.nanmean([p.get(key, math.nan) for p in parts]))
    return result


def trial_summary(ctx: TuneContext, results: Sequence[Any], preds: pd.DataFrame, last: Mapping[str, Any]) -> tuple[dict, float]:
    """``(summary, objective)`` of a finalised trial: pooled and per-fold test metrics, the
    validation UA of the finalized predictions, and the trial's objective."""
    test = preds[preds["split"] == "test"]
    pooled = metrics.summary(test["label"].to_numpy(), test["pred"].to_numpy(), list(ctx.classes))
    per_fold = [r.metrics() for r in results]
    finalized, objective = finalized_objective(ctx.model, preds, ctx.classes, last.get(OBJECTIVE, math.nan))
    summary = {
        "test_ua": pooled["ua"],
        "test_wa": pooled["wa"],
        "test_f1": pooled["f1"],
        "test_ua_fold_mean": float(np.nanmean([m["test_ua"] for m in per_fold])),
        "val_ua_final": float(np.nanmean([m["val_ua"] for m in per_fold])),
        "val_ua_finalized": finalized,
        **({OBJECTIVE: objective} if fitted_after_training(ctx.model) else {}),
        "fold_seconds": float(sum(r.seconds for r in results)),
        # the epochs' CPU time alone: unlike wall time it does not grow when other work shares the cores
        "fold_epoch_cpu_seconds": float(sum(h.get("cpu_seconds", 0.0) for r in results for h in r.history)),
    }
    return summary, objective
