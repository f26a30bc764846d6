"""Ray Tune wiring: one trial = one configuration trained on every fold, folds in parallel.

Each trial is a class trainable (:class:`FoldsTrainable`) whose resource request is one
placement group: a tiny bundle for the trainable itself plus one bundle per fold actor.
The trainable runs its folds in :class:`serray.training.actors.FoldActor` processes and
reports to Tune at the epochs where ASHA can act (:func:`report_epochs`; every epoch with
``report_every_epoch``): each actor trains its folds up to the next report in one call,
and the trainable then computes each of those epochs' results in order. On a local single-node Ray with CPU
folds it borrows warm actors that :func:`tune_model` started while Tune started (and
that trained the first trial's first epochs meanwhile; :mod:`serray.tune.pool`), with the
placement group holding their CPUs; otherwise it starts them inside its placement group.
Trainables and their actors are reused from trial to trial. For each epoch it computes,
and at a report's last epoch it reports (``training_iteration`` = epochs trained):

* ``val_ua`` - the objective Optuna and ASHA see, one of :data:`OBJECTIVES`:

  - ``common-epoch`` (default): the validation UA pooled over every fold's validation
    utterances *at the same epoch*, at the best epoch of that pooled curve so far
    (``val_ua_common_epoch``; the epoch is ``common_epoch``). One maximum over the epochs
    of a curve of all validation utterances (about 1000 on EmoDB LOSO);
  - ``fold-best`` (the design before 2026-12): the pooled validation UA with each fold
    at its *own* best epoch so far, the model the fold keeps (``val_ua_fold_best``).
    Each fold's maximum over epochs of ~100 utterances is optimistic, most of all for
    noisy (high learning-rate) trials: in a 30-epoch replay on EmoDB 7-class LOSO
    (eGeMAPS mlp), this score was 2.5 (model defaults) and 7.3 (a high-lr trial) UA
    points above the same predictions' test UA, against 0.0 and 1.9 for
    ``common-epoch``, and it ranked the high-lr trial first (0.627 vs 0.605) where its
    test UA was lower (0.555 vs 0.580).

  Both are reported either way. The folds' kept models (and their stored validation and
  test logits) are those of each fold's own early stopping in both cases: the
  objective only ranks the trials. A fold's validation part is a few speakers, and the
  mean of such small per-fold scores is noisier than one UA over all of them:
  ``val_ua_fold_mean`` and ``val_ua_fold_std`` give the per-fold view of the folds'
  best epochs (also in the trial record). A fold stopped early by its patience
  contributes its last epoch to the later points of the pooled curve.
* ``val_ua_epoch``, ``val_loss``, ``train_loss`` - means of the current epoch.

A model whose ``after_training`` hook changes its predictions (``ModelSpec.fitted_after_training``,
e.g. ``mtl``'s ELM back-end, fitted on the training part after its frame network is
trained) has per-epoch validation logits that are not those of the model a fold keeps,
and its back-end's keys (``threshold``, ``elm_hidden``, ``elm_ridge``) never change them.
For such a model the epochs' reports stay as above (ASHA compares trials by them), and
the *final* report of a completed trial, the trial record's ``objective`` and its
leaderboard ``val_ua`` are ``val_ua_finalized``: the validation UA pooled over every
fold's validation utterances of the finalized logits (each fold at its own best epoch,
then fitted). A trial that ASHA stops is finalised too, and its record and leaderboard
row carry the same score (Optuna keeps the last per-epoch value it saw of such a trial;
a completed trial whose last report falls on an ASHA rung leaves its finalized score
there). Every trial record holds ``val_ua_finalized``; only for these models it is the
objective.

Test data are never reported to the scheduler or the searcher. When a trial ends (all
folds stopped, its epoch budget used, or ASHA stopped it) the folds are finalised at
their best epochs, the validation and test logits go to the predictions store
(``run`` = experiment name, ``config_id`` = trial id) and a trial record with the test
metrics is written to ``W/tune/<experiment>/trials/<trial_id>.json``. The leaderboard
merges Tune's results with those records.

Features go to the object store once per experiment (:func:`put_inputs`) and reach the
trials through :func:`ray.tune.with_parameters`, never through a closure.

Resume: the experiment lives in ``W/tune/<experiment>`` (or ``--storage``); with
``resume=True`` :meth:`ray.tune.Tuner.restore` continues it: finished trials are kept,
unfinished or errored ones restart from their first epoch (trials keep no checkpoints;
a restart costs at most one trial's training time). serray's trial record is the proof
that a trial finished: Tune's own experiment state is saved every
``TUNE_GLOBAL_CHECKPOINT_S`` seconds and copied to the storage every ``sync_period``
(1 s each here on local disk), so after a hard kill it can lag behind; a restarted trial whose record exists reports that record's result and
trains nothing, so its record and predictions stay byte-identical. A finished trial that
Tune's saved state does not know (it started and ended after the last save) keeps its
files and its leaderboard row, and Tune runs one more trial in its place. Predictions
without a record (a result write cut short; the trial restarts) are moved to
``<experiment>/orphaned/``: the store holds exactly one record and one prediction set per
trial of the leaderboard.

A resume restores nothing serray cannot vouch for (:mod:`serray.tune.state`): before Ray
starts, every Tune state file of a local experiment (``tuner.pkl``, ``experiment_state-*``,
the searcher's files) must match the signed checksums serray recorded as Tune wrote them,
and the search's settings (:data:`serray.tune.state.SEARCH_FILE`: the run's settings,
space, objective, ``--num-samples``, epoch budget, ASHA's options) must be those it
started with; otherwise the resume is refused, naming the file or the changed settings
(old -> new). A search is never continued to another number of trials.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from unittest import mock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io, metrics
from serray.tune.options import PreparedSearch, SearchOptions, check_search, load_search
from serray.tune.state import (
    check_resume, record_files, recording, search_settings, settle, state_files, verify_state, write_search,
)

__all__ = ["TuneContext", "FoldsTrainable", "TuneOutcome", "tune_model", "experiment_dir", "FAULT_ENV", "PAUSE_ENV"]

log = logging.getLogger(__name__)

#: Testing hook: when set to a folder, every trial raises once in its first epoch (a
#: marker file per trial in that folder records that it did), to exercise Tune's retries.
FAULT_ENV = "SERRAY_TUNE_INJECT_FAULT"
#: Testing hook: when set to a folder, the trial named by the file ``pause_trial`` in it
#: (its 1-based order of finalisation, or ``all``) writes ``<trial>.paused`` (holding its
#: process id) after its predictions and before its record, then sleeps (``pause_seconds``
#: in the folder, default 600): a window to kill the driver during a trial's result write,
#: or a slow result write.
PAUSE_ENV = "SERRAY_TUNE_PAUSE_IN_WRITE"
#: Seconds Tune gives a stopping trial (e.g. stopped by ASHA as the search ends) to write
#: its predictions and record before it kills the actor (Tune's own limit is 10 s).
STOP_GRACE_S = int(os.environ.get("SERRAY_TUNE_STOP_GRACE_S", "300"))
#: A trial reports to Tune at least this often (seconds of training at the last epochs'
#: pace), also between ASHA's decision points, so progress shows and a time budget holds.
REPORT_EVERY_S = 10.0
OBJECTIVE = "val_ua"
#: What ``val_ua`` (the searcher's and ASHA's objective) is; see the module docstring.
OBJECTIVES = ("common-epoch", "fold-best")


def experiment_dir(workdir: str | Path, name: str, storage: str | None = None) -> str:
    """Where Tune keeps the experiment: ``<storage or W/tune>/<name>``."""
    base = storage or str(Path(workdir).resolve() / "tune")
    return f"{base.rstrip('/')}/{name}"


@dataclass(frozen=True)
class TuneContext:
    """What every trial needs besides the features (small; sent once per experiment)."""

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


def _trainable_class():
    from ray import tune

    class _FoldsTrainable(tune.Trainable):
        """One configuration on every fold; the epochs up to the next report per ``step``."""

        def setup(self, config: dict, shared: Any = None, ctx: TuneContext | None = None) -> None:
            assert ctx is not None and shared is not None
            self.ctx = ctx
            self._epoch_s = 0.0  # wall seconds per epoch of the last report that trained (0: not known yet)
            self.actors: list = []
            self._set: int | None = None  # the pooled actor set this trainable borrowed
            self._shared = shared
            self._configure(config)
            self.groups = []
            if self.kept is not None:
                return  # finished before an interruption: nothing to train
            self._start_actors(shared)

        def _start_actors(self, shared: Any) -> None:
            """One fold actor per group of ``folds_per_actor`` folds, for this trial's config:
            a warm set borrowed from the search's pool, else new actors in this trial's
            placement group."""
            from serray.training.actors import FoldActor
            from serray.training.actors import fold_groups

            ctx = self.ctx
            threads = max(1, int(ctx.fold_cpus))
            self.groups = fold_groups(ctx.folds, ctx.folds_per_actor)
            borrowed = ctx.pool.borrow() if ctx.pool is not None else None
            if borrowed is not None:
                self._set, self.actors = borrowed
                self._reset_actors()
                log.info("trial %s: warm fold actors (set %d), %d epoch(s) already trained", self.trial_id, self._set, self.ahead)
                return
            self.actors = [
                FoldActor.options(num_cpus=ctx.fold_cpus, num_gpus=ctx.fold_gpus).remote(
                    ctx.model, self.cfg, shared,
                    [ctx.folds[i] for i in group], ctx.normalize, ctx.seed, ctx.device, threads,
                )
                for group in self.groups
            ]

        def _configure(self, config: dict) -> None:
            from serray.models import registry

            ctx = self.ctx
            self.cfg = trial_config(registry.get(ctx.model), ctx.space, ctx.base_config, ctx.max_epochs, config)
            self.ahead = 0  # epochs the fold actors had trained for this config before it started
            self.current_trial_id = self.trial_id
            self.t0 = time.perf_counter()
            self.started_at = time.time()
            self.history: list[list[dict]] = [[] for _ in ctx.folds]
            self.val_curve: list[float] = []  # pooled validation UA of all folds at each epoch
            self.active = list(range(len(ctx.folds) and math.ceil(len(ctx.folds) / ctx.folds_per_actor)))
            self.finalized = False
            self.last_result: dict = {}  # this trial's latest step result
            record = Path(ctx.record_dir) / f"{self.trial_id}.json"
            self.kept = io.read_json(record) if record.exists() else None

        def reset_config(self, new_config: dict) -> bool:
            """Reuse this trainable and its fold actors for the next trial (no new processes)."""
            self.stop_trial()  # the previous trial, if the scheduler stopped it
            self._configure(new_config)
            if self.kept is not None:
                self.config = new_config
                return True
            if not self.actors:  # this trainable hosted only kept trials so far
                self._start_actors(self._shared)
                self.config = new_config
                return True
            self._reset_actors()
            self.config = new_config
            return True

        def _reset_actors(self) -> None:
            """Give this trial's config to the fold actors it holds; keep the epochs they trained ahead for it."""
            import ray

            self.ahead = min(ray.get([a.reset.remote(self.ctx.model, self.cfg, self.ctx.seed) for a in self.actors]))

        def _fault_once(self) -> None:
            folder = os.environ.get(FAULT_ENV)
            if not folder:
                return
            marker = Path(folder) / f"{self.current_trial_id}.fault"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text("injected\n")
                raise RuntimeError(f"injected fault for trial {self.current_trial_id} ({FAULT_ENV} is set)")

        def _kept_result(self) -> dict:
            """The result of a trial that had finished (its record exists): nothing is rerun."""
            rec = self.kept
            self.finalized = True
            keys = ("test_ua", "test_wa", "test_f1", "test_ua_fold_mean", "val_ua_final", "val_ua_finalized", "fold_seconds")
            return {OBJECTIVE: _record_objective(rec), **{k: rec[k] for k in keys if k in rec}, "kept": True, "done": True}

        def step(self) -> dict:
            """One report to Tune: the epochs up to the next point where ASHA decides
            (:func:`report_epochs`), at most about :data:`REPORT_EVERY_S` seconds of them
            (one epoch where the context asks for every epoch)."""
            import ray

            if self.kept is not None:
                return self._kept_result()
            self._fault_once()
            n, t0 = self._segment(), time.perf_counter()
            outs = dict(zip(self.active, ray.get([self.actors[g].run.remote(n) for g in self.active])))
            done0 = len(self.val_curve)
            result: dict = {}
            while self.active and len(self.val_curve) - done0 < n:
                j = len(self.val_curve) - done0
                for g in self.active:
                    for pos, m in zip(self.groups[g], outs[g][j]):
                        if not (self.history[pos] and self.history[pos][-1]["stopped"]):
                            self.history[pos].append(m)
                self.active = [g for g in self.active if not all(self.history[p][-1]["stopped"] for p in self.groups[g])]
                result = self._epoch_result()
            ran = len(self.val_curve) - done0
            if len(self.val_curve) > self.ahead:  # epochs trained now, not served from those trained ahead
                self._epoch_s = (time.perf_counter() - t0) / ran
            result["training_iteration"] = len(self.val_curve)  # ASHA's time: epochs, not reports
            self.last_result = result
            if not self.active:
                result.update(self._finalize("completed"))
                result["done"] = True
            return result

        def _segment(self) -> int:
            """Epochs of the next report: to the next ASHA decision point, at most
            :data:`REPORT_EVERY_S` seconds at the last epochs' pace (one epoch before any
            pace is known), and all the epochs trained ahead up to that point at once."""
            done, at = len(self.val_curve), self.ctx.report_at
            nxt = next((e for e in at if e > done), None)
            if nxt is None:
                return 1
            if self.ahead > done:
                return min(nxt, self.ahead) - done
            cap = max(1, int(REPORT_EVERY_S / self._epoch_s)) if self._epoch_s else 1
            return min(nxt - done, cap)

        def _epoch_result(self) -> dict:
            """The result of the epoch just added to every active fold's history (and its
            point of the pooled validation curve)."""
            from serray.training.trainer import pooled_val_ua

            last = [h[-1] for h in self.history]
            best_steps = [h[max(0, int(m.get("best_epoch", len(h))) - 1)] for h, m in zip(self.history, last)]
            best = [b.get("val_ua", math.nan) for b in best_steps]
            pooled = pooled_val_ua(best_steps)
            if math.isnan(pooled):
                pooled = float(np.nanmean(best))
            self.val_curve.append(pooled_val_ua(last))
            common = _common_epoch(self.val_curve)
            result = {
                OBJECTIVE: common[1] if self.ctx.objective == "common-epoch" and not math.isnan(common[1]) else pooled,
                "val_ua_common_epoch": common[1],
                "common_epoch": common[0],
                "val_ua_fold_best": pooled,
                "val_ua_fold_mean": float(np.nanmean(best)),
                "val_ua_fold_std": float(np.nanstd(best)),
                "val_ua_epoch": float(np.nanmean([m.get("val_ua", math.nan) for m in last])),
                "val_loss": float(np.nanmean([m.get("val_loss", math.nan) for m in last])),
                "train_loss": float(np.nanmean([m.get("train_loss", math.nan) for m in last])),
                "folds_active": sum(not h[-1]["stopped"] for h in self.history),
            }
            parts = [m.get("loss_parts") or {} for m in last]
            for key in sorted({k for p in parts for k in p}):
                result[f"train_loss_{key}"] = float(np.nanmean([p.get(key, math.nan) for p in parts]))
            return result

        def _finalize(self, reason: str) -> dict:
            import ray

            from serray.predictions import write_predictions

            if self.finalized:
                return {}
            self.finalized = True
            last = self.last_result
            results = sorted((r for rs in ray.get([a.finalize.remote() for a in self.actors]) for r in rs), key=lambda r: r.index)
            ctx = self.ctx
            actor_nodes = ray.get([a.node_id.remote() for a in self.actors])
            node_of = {ctx.folds[pos].index: node for group, node in zip(self.groups, actor_nodes) for pos in group}
            preds = pd.concat([r.predictions_frame() for r in results], ignore_index=True)
            write_predictions(ctx.workdir, preds, run=ctx.experiment, config_id=self.current_trial_id, seed=ctx.seed, classes=list(ctx.classes))
            _pause_in_write(self.current_trial_id)
            test = preds[preds["split"] == "test"]
            pooled = metrics.summary(test["label"].to_numpy(), test["pred"].to_numpy(), list(ctx.classes))
            per_fold = [r.metrics() for r in results]
            finalized, objective = _finalized_objective(ctx.model, preds, ctx.classes, last.get(OBJECTIVE, math.nan))
            summary = {
                "test_ua": pooled["ua"],
                "test_wa": pooled["wa"],
                "test_f1": pooled["f1"],
                "test_ua_fold_mean": float(np.nanmean([m["test_ua"] for m in per_fold])),
                "val_ua_final": float(np.nanmean([m["val_ua"] for m in per_fold])),
                "val_ua_finalized": finalized,
                **({OBJECTIVE: objective} if _fitted_after_training(ctx.model) else {}),
                "fold_seconds": float(sum(r.seconds for r in results)),
                # the epochs' CPU time alone: unlike wall time it does not grow when other work shares the cores
                "fold_epoch_cpu_seconds": float(sum(h.get("cpu_seconds", 0.0) for r in results for h in r.history)),
            }
            record = {
                "trial_id": self.current_trial_id,
                "experiment": ctx.experiment,
                "model": ctx.model,
                "config": self.cfg,
                "seed": ctx.seed,
                "finished": reason,
                "objective": float(objective),
                "objective_kind": ctx.objective,
                "objective_source": "finalized" if _fitted_after_training(ctx.model) else "epochs",
                "val_ua_common_epoch": last.get("val_ua_common_epoch", math.nan),
                "common_epoch": last.get("common_epoch"),
                "val_ua_fold_best": last.get("val_ua_fold_best", math.nan),
                "val_ua_curve": [round(float(v), 6) for v in self.val_curve],
                "val_ua_fold_mean_std": [last.get("val_ua_fold_mean", math.nan), last.get("val_ua_fold_std", math.nan)],
                "epochs": max(len(h) for h in self.history),
                "best_epochs": [r.best_epoch for r in results],
                "epochs_trained_ahead": self.ahead,
                "seconds": time.perf_counter() - self.t0,
                "started_at": self.started_at,
                "ended_at": time.time(),
                **summary,
                "node_ids": sorted(set(actor_nodes)),
                "folds": [{"fold": r.index, "name": r.name, "node_id": node_of.get(r.index), **m} for r, m in zip(results, per_fold)],
            }
            io.write_json(record, Path(ctx.record_dir) / f"{self.current_trial_id}.json")
            return summary

        def stop_trial(self) -> None:
            """Finalise a trial the scheduler stopped, so its predictions and record are kept."""
            try:
                if not self.finalized and self.kept is None and any(self.history):
                    self._finalize("stopped by scheduler")
            except Exception:  # noqa: BLE001 - the trial is over anyway; keep going
                log.exception("could not finalise trial %s", self.current_trial_id)

        def stop(self) -> None:
            self.stop_trial()
            super().stop()

        def cleanup(self) -> None:
            import ray

            if getattr(self, "_set", None) is not None:  # pooled: back to the pool, which ends them
                self.ctx.pool.give_back(self._set)
                self._set = None
                return
            for a in getattr(self, "actors", []):
                ray.kill(a)

    _FoldsTrainable.__name__ = "FoldsTrainable"
    _FoldsTrainable.__qualname__ = "FoldsTrainable"
    return _FoldsTrainable


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


def _common_epoch(curve: Sequence[float]) -> tuple[int, float]:
    """``(epoch, value)`` of the best point of a pooled validation curve (first maximum;
    1-based epoch; ``(0, nan)`` while the curve has no finite point).

    Example:
        >>> _common_epoch([0.4, 0.6, 0.55, 0.6])
        (2, 0.6)
    """
    vals = np.asarray(curve, dtype=float)
    if not len(vals) or np.isnan(vals).all():
        return 0, math.nan
    i = int(np.nanargmax(vals))
    return i + 1, float(vals[i])


def _fitted_after_training(model: str) -> bool:
    """Whether the model's predictions change after training (``ModelSpec.fitted_after_training``)."""
    from serray.models import registry

    return bool(registry.get(model).fitted_after_training)


def _finalized_objective(model: str, preds: pd.DataFrame, classes: Sequence[str], epochs_value: float) -> tuple[float, float]:
    """``(val_ua_finalized, objective)`` of a finalised trial: the validation UA pooled over
    every fold's finalized validation predictions, and the trial's objective (that UA for a
    model fitted after training, else ``epochs_value``, the last per-epoch objective)."""
    val = preds[preds["split"] == "validation"]
    finalized = metrics.unweighted_average_recall(val["label"].to_numpy(), val["pred"].to_numpy(), list(classes)) if len(val) else math.nan
    return float(finalized), float(finalized if _fitted_after_training(model) else epochs_value)


def _pause_in_write(trial_id: str) -> None:
    """The :data:`PAUSE_ENV` testing hook (a no-op unless the variable is set)."""
    folder = os.environ.get(PAUSE_ENV)
    if not folder:
        return
    d = Path(folder)
    count = d / "finalised"
    n = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(n))
    which = (d / "pause_trial").read_text().strip() if (d / "pause_trial").exists() else ""
    if which == "all" or (which and n == int(which)):
        (d / f"{trial_id}.paused").write_text(str(os.getpid()))
        time.sleep(float((d / "pause_seconds").read_text()) if (d / "pause_seconds").exists() else 600)


@contextlib.contextmanager
def _stop_grace() -> Any:
    """Let stopping trials finish their result write (Tune kills them after 10 s otherwise).

    A trial that ASHA stops is finalised when its actor is reused for the next trial or
    stopped; as the search ends, Tune stops the cached actors and kills any still busy
    after a fixed 10 s, which lost the last stopped trial's predictions and record.
    """
    from ray.tune.execution import tune_controller

    init = tune_controller.TuneController.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._actor_force_cleanup_timeout = STOP_GRACE_S

    with mock.patch.object(tune_controller.TuneController, "__init__", patched):
        yield


def _state_trials(path: Path) -> dict[str, str] | None:
    """Trial id -> status in Tune's newest saved experiment state (``None`` without one)."""
    import json

    states = sorted(path.glob("experiment_state-*.json"))  # Tune restores the newest by name
    if not states:
        return None
    out = {}
    for entry in json.loads(states[-1].read_text())["trial_data"]:
        trial = json.loads(entry[0])
        out[str(trial["trial_id"])] = str(trial.get("status"))
    return out


def _reconcile_for_resume(path: Path, record_dir: Path, workdir: Path, experiment: str) -> tuple[str, list[str]]:
    """Before a resume: count kept and restarting trials; set cut-short results aside.

    Returns the line that says what the resume keeps and restarts, and the finished
    trials Tune's saved state does not know (kept, and listed in the leaderboard; Tune
    runs as many trials again to reach its count).
    """
    from serray.predictions import predictions_dir

    states = _state_trials(path) or {}
    records = {p.stem for p in record_dir.glob("*.json")} if record_dir.exists() else set()
    kept = sorted(records & set(states))
    restart = sorted(set(states) - records)
    unknown = sorted(records - set(states))
    # predictions without a record are a result write cut short: its trial restarts (or is gone)
    for part in sorted((predictions_dir(workdir) / experiment).glob("*__seed*.parquet")):
        if part.name.split("__")[0] not in records:
            (path / "orphaned").mkdir(parents=True, exist_ok=True)
            part.replace(path / "orphaned" / part.name)
    line = f"resuming {path}: {len(kept) + len(unknown)} finished trial(s) kept, {len(restart)} restart from their first epoch"
    if unknown:
        line += (f" ({len(unknown)} of the finished trials, {', '.join(unknown)}, ended after Tune's last saved state: "
                 "they stay in the leaderboard and Tune runs as many new trials)")
    return line, unknown


def __getattr__(name: str) -> Any:  # lazy: importing this module must not import Ray Tune
    if name == "FoldsTrainable":
        cls = _trainable_class()
        globals()["FoldsTrainable"] = cls
        return cls
    raise AttributeError(name)


@dataclass
class TuneOutcome:
    """What :func:`tune_model` produced (also on disk under :attr:`path`)."""

    experiment: str
    path: str
    leaderboard: pd.DataFrame
    best: dict
    best_yaml: Path
    seconds: float
    notes: list[str] = field(default_factory=list)


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


def _record_objective(rec: Mapping[str, Any]) -> float:
    """The objective a finished trial reported last, from its record (older records: ``val_ua_final``)."""
    return float(rec.get("objective", rec.get("val_ua_final", math.nan)))


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
    return _board_row(tid, _record_objective(rec), status, rec, {}, rec.get("config") or {}, searched)


def _leaderboard(results: Any, record_dir: Path, searched: Sequence[str], space: Any = None, extra: Sequence[str] = ()) -> pd.DataFrame:
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


def _logger_callbacks(tensorboard: bool) -> list:
    """Tune's JSON and CSV loggers (its result analysis reads them), TBX on request."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback(), *([TBXLoggerCallback()] if tensorboard else [])]


def tune_model(
    run: Any,
    options: SearchOptions | None = None,
    *,
    storage: str | None = None,
    max_concurrent_trials: int | None = None,
    time_budget_s: float | None = None,
    max_failures: int = 2,
    tensorboard: bool = False,
    verbose: int = 1,
    objective: str = "common-epoch",
) -> TuneOutcome:
    """Search a model's hyperparameters with Optuna TPE + ASHA; every trial trains all folds.

    Args:
        run: The :class:`~serray.training.spec.RunSpec`: model, features, protocol,
            labels, normalisation, preset (the space's own preset wins), config (the
            starting point the space searches around) and ``seed`` (of the Optuna
            sampler and of every trial's training).
        options: The :class:`~serray.tune.options.SearchOptions` (space, trials, name,
            cluster, epochs, ASHA, resume, device). Here ``fold_resources`` is each fold
            actor's: a trial starts as many actors of that size as fit at once (at most
            one per fold) and spreads its folds over them (default: one actor per
            cluster CPU, so one trial's folds fill the cluster). ASHA's default grace
            period (a quarter of the epoch budget, at least 3) keeps a trial whose first
            epochs are slow, e.g. SGD or a convolutional model, from being stopped for them.
        storage: Tune storage path (e.g. ``s3://bucket/serray``); default ``W/tune``.
        max_concurrent_trials, time_budget_s: Passed to Tune.
        max_failures: Retries of a trial whose training raises.
        tensorboard: Also write TensorBoard event files per trial (Tune's TBX logger).
            Off by default: serray keeps its own trial records, and the TBX logger
            cost about 10 % of a short search's wall time here.
        verbose: Tune's verbosity.
        objective: What ranks the trials (:data:`OBJECTIVES`, module docstring):
            ``common-epoch`` (default) or ``fold-best`` (the earlier, optimistic score).

    Raises:
        serray.tune.space.SearchSpaceError: Malformed space (before any trial starts).
        FileExistsError: The experiment exists and ``resume`` is not set.
    """
    import ray
    from ray import tune

    from serray.raycluster import init_ray

    t0 = time.perf_counter()
    options = options or SearchOptions()
    check_objective(objective)
    prep = load_search(run, options, "tune")
    path = experiment_dir(prep.run.workdir, prep.name, storage)
    local_path = None if "://" in path else Path(path)
    if options.resume and local_path is not None:
        check_objective(objective, local_path / "trials")
    if not options.resume and local_path is not None and (local_path / "tuner.pkl").exists():
        raise FileExistsError(f"{path}: experiment {prep.name!r} exists; pass --resume to continue it or --name NEW to start another")
    settings = _check_state(local_path, search_settings(prep, options, objective), options.resume)
    launch: _Launch | None = None
    try:
        if ray.is_initialized():  # warm fold actors boot while this process checks the model (and imports torch)
            launch = _launch(prep, options, max_concurrent_trials=max_concurrent_trials, time_budget_s=time_budget_s)
        check_search(prep)
        init_ray(options.address)
        launch = launch or _launch(prep, options, max_concurrent_trials=max_concurrent_trials, time_budget_s=time_budget_s)
        record_dir = Path(prep.run.workdir).resolve() / "tune" / prep.name / "trials" if local_path is None else local_path / "trials"
        trainable = _trainable(prep, options, launch, record_dir, objective, tensorboard)
        notes: list[str] = []
        unknown: list[str] = []
        if options.resume and tune.Tuner.can_restore(path):
            tuner, unknown = _restored_tuner(path, local_path, record_dir, prep, trainable, notes)
        else:
            if options.resume:
                log.warning("nothing to resume at %s; starting a new experiment", path)
            tuner = _new_tuner(
                prep, options, trainable, path, notes, max_concurrent_trials=max_concurrent_trials, time_budget_s=time_budget_s,
                max_failures=max_failures, tensorboard=tensorboard, verbose=verbose, local=local_path is not None,
            )
            if local_path is not None:
                write_search(local_path, settings)
                record_files(local_path, ["tuner.pkl"])
        results = _fit(tuner, local_path)
    finally:
        if launch is not None and launch.pool is not None:
            launch.pool.shutdown()
    board = _leaderboard(results, record_dir, prep.space.names(), prep.space, extra=unknown)
    out_dir = Path(path) if local_path is not None else Path(prep.run.workdir) / "tune" / prep.name
    best, best_yaml = _write_outcome(board, prep, out_dir, record_dir, objective, path, notes)
    n_errors = int(board["status"].str.startswith("error").sum())
    if n_errors:
        notes.append(f"{n_errors} trial(s) failed after {max_failures} retries; see their error files under {path}")
    return TuneOutcome(prep.name, path, board, best, best_yaml, time.perf_counter() - t0, notes)


def _fit(tuner: Any, local_path: Path | None = None) -> Any:
    """``tuner.fit()`` with serray's Tune settings (loggers, checkpoint period, stop grace),
    recording the checksums of Tune's state files in ``local_path`` (:mod:`serray.tune.state`)."""
    # Tune's JSON and CSV loggers are passed explicitly; stop it adding its TBX logger beside them.
    env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "1")}
    with mock.patch.dict(os.environ, env), warnings.catch_warnings(), _stop_grace(), recording(local_path):
        # a restarted trial reports its first epochs again; Optuna keeps the first report
        warnings.filterwarnings("ignore", message="The reported value is ignored because this `step`")
        results = tuner.fit()
    if local_path is not None:
        settle(local_path)
    return results


def _check_state(local_path: Path | None, settings: dict, resume: bool) -> dict:
    """Before Ray starts: a resume of a local experiment must find Tune's state files as
    serray recorded them and the search's settings unchanged (:func:`serray.tune.state.check_resume`);
    a new search must find no state file serray did not record. Returns ``settings``."""
    if local_path is None:
        if resume:
            log.warning("resuming from remote storage: serray does not verify Tune's state files there, nor the settings")
        return settings
    if resume and (local_path / "tuner.pkl").exists():
        check_resume(local_path, settings)
    elif state_files(local_path):
        verify_state(local_path)
    return settings


@dataclass(frozen=True)
class _Launch:
    """How a search's trials train: the features in the object store, each trial's fold
    actors (``per`` folds each, ``cpu``/``gpu`` per actor) and the warm pool, if any."""

    shared: Any
    per: int
    cpu: float
    gpu: float
    pool: Any = None


def _launch(prep: PreparedSearch, options: SearchOptions, *, max_concurrent_trials: int | None,
            time_budget_s: float | None) -> _Launch:
    """Put the features into the object store, size the trials' fold actors, and start
    warm ones where they serve (:mod:`serray.tune.pool`)."""
    import ray

    from serray.training.actors import fold_groups, fold_resources, put_inputs
    from serray.tune import pool as fold_pool

    res = options.fold_resources or {}
    per, cpu, gpu = fold_resources(len(prep.exp.folds), res.get("cpu"), res.get("gpu"), options.device)
    shared = put_inputs(prep.exp.inputs)
    if not fold_pool.pool_enabled(options.address, gpu):
        return _Launch(shared, per, cpu, gpu)
    groups = fold_groups(prep.exp.folds, per)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    n_sets = fold_pool.pool_sets(cpus, cpu, len(groups), options.num_samples, max_concurrent_trials)
    point = None if options.resume else prep.space.point(prep.base)
    epochs = fold_pool.ahead_epochs(prep.grace, prep.max_t, resume=options.resume, time_budget_s=time_budget_s,
                                    n_sets=n_sets, first_point=point)
    ahead = None
    if epochs:
        ahead = (trial_config(prep.spec, prep.space, prep.base, options.max_epochs, prep.space.trial_params(point)), epochs)
    pool = fold_pool.start_pool(
        prep.spec.name, shared, prep.exp.folds, groups, n_sets=n_sets, normalize=prep.run.normalize, seed=prep.run.seed,
        device=options.device, threads=max(1, int(cpu)), ahead=ahead,
    )
    return _Launch(shared, per, cpu, gpu, pool)


def _trainable(prep: PreparedSearch, options: SearchOptions, launch: _Launch, record_dir: Path, objective: str,
               tensorboard: bool = False) -> Any:
    """The trainable with its features, context and placement group: an empty head bundle
    (the trainable itself needs no CPU) and one bundle per fold actor (warm pooled actors
    ask for no CPU themselves: the bundles hold it for them)."""
    from ray import tune

    per, cpu, gpu = launch.per, launch.cpu, launch.gpu
    n_actors = math.ceil(len(prep.exp.folds) / per)
    bundles = [{}] + [{"CPU": cpu, **({"GPU": gpu} if gpu else {})} for _ in range(n_actors)]
    log.info("each trial: %d fold actor(s) x %d fold(s), cpu=%s gpu=%s per actor", n_actors, per, cpu, gpu)
    run, exp = prep.run, prep.exp
    ctx = TuneContext(
        workdir=str(Path(run.workdir).resolve()), experiment=prep.name, model=prep.spec.name, base_config=prep.base,
        folds=exp.folds, classes=exp.classes, normalize=run.normalize, seed=run.seed, device=options.device,
        fold_cpus=cpu, fold_gpus=gpu, folds_per_actor=per, max_epochs=options.max_epochs, record_dir=str(record_dir),
        space=prep.space, objective=objective, pool=launch.pool, report_at=_report_at(prep, options, tensorboard),
    )
    return tune.with_resources(tune.with_parameters(_trainable_class(), shared=launch.shared, ctx=ctx), tune.PlacementGroupFactory(bundles))


def _report_at(prep: PreparedSearch, options: SearchOptions, tensorboard: bool) -> tuple[int, ...]:
    """Where trials' reports end (:func:`report_epochs`); ``()``, a report every epoch, when
    asked for, for TensorBoard's curves, and on resume (the restored scheduler's rungs are
    those of the first run's options)."""
    if options.report_every_epoch or tensorboard or options.resume:
        return ()
    return report_epochs(prep.grace, prep.max_t, options.reduction_factor)


def _restored_tuner(path: str, local_path: Path | None, record_dir: Path, prep: PreparedSearch, trainable: Any,
                    notes: list[str]) -> tuple[Any, list[str]]:
    """The interrupted experiment at ``path``, reconciled with serray's trial records."""
    from ray import tune

    unknown: list[str] = []
    if local_path is not None:
        line, unknown = _reconcile_for_resume(local_path, record_dir, Path(prep.run.workdir).resolve(), prep.name)
        log.info("%s", line)
        notes.append(line)
    else:
        log.info("resuming experiment %s", path)
    if local_path is not None:
        verify_state(local_path)  # again, just before Tune unpickles them
    return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True), unknown


def _new_tuner(prep: PreparedSearch, options: SearchOptions, trainable: Any, path: str, notes: list[str], *,
               max_concurrent_trials: int | None, time_budget_s: float | None, max_failures: int, tensorboard: bool,
               verbose: int, local: bool) -> Any:
    """A new Tuner: Optuna TPE (the base config first, where the space holds it) and ASHA."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    point = prep.space.point(prep.base)
    searcher = OptunaSearch(
        space=prep.space.define_by_run, metric=OBJECTIVE, mode="max", seed=prep.run.seed,
        points_to_evaluate=[point] if point else None,
    )
    if point is None:
        notes.append("the model's default config lies outside the search space and was not evaluated first")
    log.info("ASHA: max_t %d epochs, grace period %d, reduction factor %d", prep.max_t, prep.grace, options.reduction_factor)
    scheduler = ASHAScheduler(
        time_attr="training_iteration", metric=OBJECTIVE, mode="max", max_t=prep.max_t,
        grace_period=prep.grace, reduction_factor=options.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=options.num_samples,
            max_concurrent_trials=max_concurrent_trials, time_budget_s=time_budget_s, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=prep.name,
            storage_path=path.rsplit("/", 1)[0],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            # Tune's experiment state reaches the storage at most this often: every
            # second on local disk, so a resume after a hard kill lags at most ~1 s
            sync_config=tune.SyncConfig(sync_period=1 if local else 30),
            verbose=verbose,
            callbacks=_logger_callbacks(tensorboard),
        ),
    )


def _write_outcome(board: pd.DataFrame, prep: PreparedSearch, out_dir: Path, record_dir: Path, objective: str,
                   path: str, notes: list[str]) -> tuple[dict, Path]:
    """Write the leaderboard (parquet and CSV) and best.yaml; return best.yaml's content and path."""
    if board.empty or board["val_ua"].isna().all():
        raise RuntimeError(f"experiment {prep.name}: no trial reported a validation UA; see the errors above and {path}")
    io.write_parquet(board, out_dir / "leaderboard.parquet")
    io.write_text(board.to_csv(index=False), out_dir / "leaderboard.csv")
    top = board.iloc[0]
    best_rec_path = record_dir / f"{top['trial_id']}.json"
    best_cfg = io.read_json(best_rec_path)["config"] if best_rec_path.exists() else {
        **prep.base, **{k[len('config/'):]: v for k, v in top.items() if k.startswith("config/") and v is not None}
    }
    best = {
        "model": prep.spec.name,
        **prep.run.record(),
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
    best_yaml = out_dir / "best.yaml"
    io.write_yaml(best, best_yaml)
    if best.get("transductive"):
        notes.append(f"transductive: {best['transductive_reason']}")
    return best, best_yaml
