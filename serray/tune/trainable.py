"""The Tune trainable: one trial = one configuration trained on every fold by the fold executor.

Each trial's folds train on :class:`serray.training.executor.FoldActors`: a warm set
borrowed from the search's pool (:mod:`serray.tune.pool`), else actors started inside the
trial's placement group. Trainables and their actors are reused from trial to trial
(:meth:`FoldsTrainable.reset_config`). Each :meth:`~FoldsTrainable.step` trains the epochs
up to the next report (:func:`serray.tune.trial.report_epochs`) in one call per actor and
reports the last one's result (:func:`serray.tune.trial.epoch_result`); when the trial
ends, its folds are finalised, their logits go to the predictions store and its record to
``<experiment>/trials/<trial_id>.json`` (:mod:`serray.training.records`). The module
docstring of :mod:`serray.tune.runner` says what is reported and why.

Checkpoints (:mod:`serray.tune.checkpoint`): a report at one of ASHA's rungs, or a few
minutes after the last checkpoint, asks Tune to save one (``should_checkpoint``);
:meth:`~FoldsTrainable.save_checkpoint` collects every fold's training state from the
fold actors, :meth:`~FoldsTrainable.load_checkpoint` puts one back (a retry, a resume, or
population-based training's exploit of another trial's checkpoint).

This module imports Ray Tune; :mod:`serray.tune.runner` imports it on first use.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from ray import tune

from serray import io
from serray.training.executor import FoldActors
from serray.training.records import write_fold_predictions, write_trial_record
from serray.tune.checkpoint import read_checkpoint, should_checkpoint, write_checkpoint
from serray.tune.trial import (
    FAULT_ENV, FAULT_EPOCH_ENV, FAULT_HANG_ENV, KEPT_KEYS, OBJECTIVE, REPORT_EVERY_S, TuneContext, best_recorded, epoch_result,
    fitted_after_training, record_objective,
    trial_config, trial_summary,
)

__all__ = ["FoldsTrainable"]

log = logging.getLogger(__name__)

class FoldsTrainable(tune.Trainable):
    """One configuration on every fold; the epochs up to the next report per ``step``."""

    def setup(self, config: dict, shared: Any = None, ctx: TuneContext | None = None) -> None:
        if ctx is None or shared is None:
            raise ValueError("FoldsTrainable needs shared= and ctx= (tune.with_parameters)")
        self.ctx = ctx
        self._epoch_s = 0.0  # wall seconds per epoch of the last report that trained (0: not known yet)
        self.fold_actors: FoldActors | None = None
        self._set: int | None = None  # the pooled actor set this trainable borrowed
        self._shared = shared
        self._checkpointable: bool | None = None  # whether the fold trainers can save their whole state
        self._configure(config)
        if self.kept is None:  # else: finished before an interruption, nothing to train
            self._start_actors()

    def _start_actors(self) -> None:
        """The fold actors of this trial's config: a warm set borrowed from the search's
        pool, else new actors in this trial's placement group."""
        ctx = self.ctx
        borrowed = ctx.pool.borrow() if ctx.pool is not None else None
        if borrowed is not None:
            from serray.training.actors import fold_groups

            self._set, actors = borrowed
            self.fold_actors = FoldActors(actors, fold_groups(ctx.folds, ctx.folds_per_actor), ctx.folds)
            self.ahead = self.fold_actors.reset(ctx.model, self.cfg, ctx.seed)
            log.info("trial %s: warm fold actors (set %d), %d epoch(s) already trained", self.trial_id, self._set, self.ahead)
            return
        self.fold_actors = FoldActors.start(
            ctx.model, self.cfg, self._shared, ctx.folds, per_actor=ctx.folds_per_actor, num_cpus=ctx.fold_cpus,
            num_gpus=ctx.fold_gpus, normalize=ctx.normalize, seed=ctx.seed, device=ctx.device,
        )

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
        self.failed = False  # a step raised: the trial is retried, not finalised
        self.last_result: dict = {}  # this trial's latest step result
        self.restores: list[dict] = []  # {"epoch", "from_trial"} of every checkpoint this trial went on from
        self._saved_at = time.perf_counter()  # of the last checkpoint (or the trial's start)
        record = Path(ctx.record_dir) / f"{self.trial_id}.json"
        self.kept = io.read_json(record) if record.exists() else None

    def reset_config(self, new_config: dict) -> bool:
        """Reuse this trainable and its fold actors for the next trial (no new processes)."""
        if self.ctx.finalize_on_stop:
            self.stop_trial()  # the previous trial, if the scheduler stopped it
        self._configure(new_config)
        if self.kept is None and self.fold_actors is None:  # this trainable hosted only kept trials so far
            self._start_actors()
        elif self.kept is None:
            self.ahead = self.fold_actors.reset(self.ctx.model, self.cfg, self.ctx.seed)
        self.config = new_config
        return True

    def _fault_once(self) -> None:
        """The testing hook of :data:`FAULT_ENV` (a raise, or with :data:`FAULT_HANG_ENV` a sleep)."""
        folder = os.environ.get(FAULT_ENV)
        if not folder or len(self.val_curve) < int(os.environ.get(FAULT_EPOCH_ENV, "0")):
            return
        hang = float(os.environ.get(FAULT_HANG_ENV, "0"))
        marker = Path(folder) / ("hang.fault" if hang else f"{self.current_trial_id}.fault")
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{self.current_trial_id} {len(self.val_curve)} {os.getpid()}\n")
            if hang:
                time.sleep(hang)
            raise RuntimeError(f"injected fault for trial {self.current_trial_id} ({FAULT_ENV} is set)")

    def _kept_result(self) -> dict:
        """The result of a trial that had finished (its record exists): nothing is rerun."""
        rec = self.kept
        self.finalized = True
        return {OBJECTIVE: record_objective(rec), **{k: rec[k] for k in KEPT_KEYS if k in rec}, "kept": True, "done": True}

    def step(self) -> dict:
        """One report to Tune: the epochs up to the next point where ASHA decides
        (:func:`~serray.tune.trial.report_epochs`), at most about :data:`REPORT_EVERY_S`
        seconds of them (one epoch where the context asks for every epoch). A step that
        raises marks the trial failed: Tune retries it (from its last checkpoint), so it
        is not finalised when Tune stops this actor."""
        try:
            return self._step()
        except BaseException:
            self.failed = True
            raise

    def _step(self) -> dict:
        if self.kept is not None:
            return self._kept_result()
        self._fault_once()
        n, t0 = self._segment(), time.perf_counter()
        outs = self.fold_actors.run(n, self.active)
        done0 = len(self.val_curve)
        result: dict = {}
        groups = self.fold_actors.groups
        while self.active and len(self.val_curve) - done0 < n:
            j = len(self.val_curve) - done0
            for g in self.active:
                for pos, m in zip(groups[g], outs[g][j]):
                    if not (self.history[pos] and self.history[pos][-1]["stopped"]):
                        self.history[pos].append(m)
            self.active = [g for g in self.active if not all(self.history[p][-1]["stopped"] for p in groups[g])]
            result = epoch_result(self.history, self.val_curve, self.ctx.objective)
        ran = len(self.val_curve) - done0
        if len(self.val_curve) > self.ahead:  # epochs trained now, not served from those trained ahead
            self._epoch_s = (time.perf_counter() - t0) / ran
        result["training_iteration"] = len(self.val_curve)  # ASHA's time: epochs, not reports
        if self.restores:
            result["restored_from_epoch"] = self.restores[-1]["epoch"]
        self.last_result = result
        if not self.active:
            result.update(self._finalize("completed"))
            result["done"] = True
        elif self._wants_checkpoint():
            result["should_checkpoint"] = True  # ray.tune.result.SHOULD_CHECKPOINT: Tune calls save_checkpoint
        return result

    def _wants_checkpoint(self) -> bool:
        """At ASHA's rungs and every ``checkpoint_every_s`` (:func:`~serray.tune.checkpoint.should_checkpoint`),
        when the fold trainers can save their whole state."""
        ctx = self.ctx
        if not should_checkpoint(len(self.val_curve), ctx.checkpoint_at, since_s=time.perf_counter() - self._saved_at,
                                 every_s=ctx.checkpoint_every_s):
            return False
        if self._checkpointable is None:
            self._checkpointable = self.fold_actors.checkpointable()
            if not self._checkpointable:
                log.info("model %s keeps training state outside its state dict; its trials save no checkpoints", ctx.model)
        return self._checkpointable

    def save_checkpoint(self, checkpoint_dir: str) -> str:
        """Tune's class-API checkpoint (:mod:`serray.tune.checkpoint`): every fold's training
        state and this trial's progress; safetensors and JSON, no pickle."""
        self._saved_at = time.perf_counter()
        if self.kept is not None or self.finalized or self.fold_actors is None:
            write_checkpoint(checkpoint_dir, {"trial_id": self.current_trial_id, "finished": True}, [])
            return checkpoint_dir
        progress = {
            "trial_id": self.current_trial_id, "epoch": len(self.val_curve), "config": self.cfg, "history": self.history,
            "val_curve": self.val_curve, "active": self.active, "ahead": self.ahead, "epoch_s": self._epoch_s,
            "last_result": {k: v for k, v in self.last_result.items() if isinstance(v, (int, float, str, bool, type(None)))},
            "seconds": time.perf_counter() - self.t0, "started_at": self.started_at, "restores": self.restores,
        }
        write_checkpoint(checkpoint_dir, progress, self.fold_actors.save_state())
        log.debug("trial %s: checkpoint at epoch %d", self.current_trial_id, len(self.val_curve))
        return checkpoint_dir

    def load_checkpoint(self, checkpoint: str) -> None:
        """Go on from a checkpoint of this trial (a retry, a resume) or of another one
        (population-based training's exploit): the folds' states and the trial's progress."""
        if self.kept is not None or self.fold_actors is None:
            return  # finished before: its record is its result
        head, folds = read_checkpoint(checkpoint, len(self.ctx.folds))
        if head.get("finished"):
            return
        self.fold_actors.load_state(folds)
        self.history = [[dict(m) for m in h] for h in head["history"]]
        self.val_curve = [float(v) for v in head["val_curve"]]
        self.active, self.ahead, self._epoch_s = list(head["active"]), int(head["ahead"]), float(head["epoch_s"])
        self.last_result = dict(head["last_result"])
        self.t0 = time.perf_counter() - float(head["seconds"])
        if head["trial_id"] == self.current_trial_id:
            self.started_at = float(head["started_at"])
        self.restores = [*head.get("restores", []), {"epoch": int(head["epoch"]), "from_trial": head["trial_id"]}]
        self._saved_at = time.perf_counter()
        log.info("trial %s: restored at epoch %d from a checkpoint of trial %s", self.current_trial_id, head["epoch"],
                 head["trial_id"])

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

    def _finalize(self, reason: str) -> dict:
        """Finalise every fold; write the trial's predictions, then its record; the summary."""
        if self.finalized:
            return {}
        self.finalized = True
        ctx = self.ctx
        keep = ctx.keep_models != "none" and ctx.kept_features is not None
        results = sorted(self.fold_actors.finalize(keep), key=lambda r: r.index)
        actor_nodes = self.fold_actors.node_ids()
        node_of = {ctx.folds[pos].index: node for group, node in zip(self.fold_actors.groups, actor_nodes) for pos in group}
        _, preds = write_fold_predictions(ctx.workdir, results, run=ctx.experiment, config_id=self.current_trial_id,
                                          seed=ctx.seed, classes=ctx.classes)
        if ctx.on_result_write is not None:
            ctx.on_result_write(self.current_trial_id)
        summary, objective = trial_summary(ctx, results, preds, self.last_result)
        if keep:
            self._keep_models(results, objective)
        record = {**self._record_head(reason, objective, [r.best_epoch for r in results]), **summary, "node_ids": sorted(set(actor_nodes)),
                  "folds": [{"fold": r.index, "name": r.name, "node_id": node_of.get(r.index), **r.metrics()} for r in results]}
        write_trial_record(ctx.record_dir, self.current_trial_id, record)
        return summary

    def _keep_models(self, results: list, objective: float) -> None:
        """Write the folds' trained models (``W/models/<experiment>/<trial>__seed<s>``): every
        trial's with ``keep_models="all"``, else a trial's at least as good as every finished
        one (the search removes all but the best one's when it ends)."""
        from serray.artifacts.keep import write_kept_models

        ctx = self.ctx
        best = best_recorded(ctx.record_dir)
        if ctx.keep_models == "all" or math.isnan(best) or not objective < best:
            write_kept_models(ctx.workdir, ctx.experiment, self.current_trial_id, ctx.seed, results, ctx.kept_features)
        for r in results:
            r.kept = None

    def _record_head(self, reason: str, objective: float, best_epochs: list[int]) -> dict:
        """The trial record's fields before its test summary: config, objective, curve, epochs, timing."""
        ctx, last = self.ctx, self.last_result
        return {
            "trial_id": self.current_trial_id,
            "experiment": ctx.experiment,
            "model": ctx.model,
            "config": self.cfg,
            "seed": ctx.seed,
            "finished": reason,
            "objective": float(objective),
            "objective_kind": ctx.objective,
            "objective_source": "finalized" if fitted_after_training(ctx.model) else "epochs",
            "val_ua_common_epoch": last.get("val_ua_common_epoch", math.nan),
            "common_epoch": last.get("common_epoch"),
            "val_ua_fold_best": last.get("val_ua_fold_best", math.nan),
            "val_ua_curve": [round(float(v), 6) for v in self.val_curve],
            "val_ua_fold_mean_std": [last.get("val_ua_fold_mean", math.nan), last.get("val_ua_fold_std", math.nan)],
            "epochs": max(len(h) for h in self.history),
            "best_epochs": best_epochs,
            "epochs_trained_ahead": self.ahead,
            "restored_from_epoch": self.restores[-1]["epoch"] if self.restores else None,
            "restores": self.restores,
            "seconds": time.perf_counter() - self.t0,
            "started_at": self.started_at,
            "ended_at": time.time(),
        }

    def stop_trial(self) -> None:
        """Finalise a trial the scheduler stopped, so its predictions and record are kept."""
        try:
            if not self.finalized and not self.failed and self.kept is None and any(self.history):
                self._finalize("stopped by scheduler")
        except Exception:  # noqa: BLE001 - the trial is over anyway; keep going
            log.exception("could not finalise trial %s", self.current_trial_id)

    def stop(self) -> None:
        if self.ctx.finalize_on_stop:
            self.stop_trial()
        super().stop()

    def cleanup(self) -> None:
        if getattr(self, "_set", None) is not None:  # pooled: back to the pool, which ends them
            self.ctx.pool.give_back(self._set)
            self._set = None
            return
        if getattr(self, "fold_actors", None) is not None:
            self.fold_actors.kill()
