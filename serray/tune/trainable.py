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
from serray.tune.trial import (
    FAULT_ENV, KEPT_KEYS, OBJECTIVE, REPORT_EVERY_S, TuneContext, epoch_result, fitted_after_training, record_objective,
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
        self.last_result: dict = {}  # this trial's latest step result
        record = Path(ctx.record_dir) / f"{self.trial_id}.json"
        self.kept = io.read_json(record) if record.exists() else None

    def reset_config(self, new_config: dict) -> bool:
        """Reuse this trainable and its fold actors for the next trial (no new processes)."""
        self.stop_trial()  # the previous trial, if the scheduler stopped it
        self._configure(new_config)
        if self.kept is None and self.fold_actors is None:  # this trainable hosted only kept trials so far
            self._start_actors()
        elif self.kept is None:
            self.ahead = self.fold_actors.reset(self.ctx.model, self.cfg, self.ctx.seed)
        self.config = new_config
        return True

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
        return {OBJECTIVE: record_objective(rec), **{k: rec[k] for k in KEPT_KEYS if k in rec}, "kept": True, "done": True}

    def step(self) -> dict:
        """One report to Tune: the epochs up to the next point where ASHA decides
        (:func:`~serray.tune.trial.report_epochs`), at most about :data:`REPORT_EVERY_S`
        seconds of them (one epoch where the context asks for every epoch)."""
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

    def _finalize(self, reason: str) -> dict:
        """Finalise every fold; write the trial's predictions, then its record; the summary."""
        if self.finalized:
            return {}
        self.finalized = True
        ctx = self.ctx
        results = sorted(self.fold_actors.finalize(), key=lambda r: r.index)
        actor_nodes = self.fold_actors.node_ids()
        node_of = {ctx.folds[pos].index: node for group, node in zip(self.fold_actors.groups, actor_nodes) for pos in group}
        _, preds = write_fold_predictions(ctx.workdir, results, run=ctx.experiment, config_id=self.current_trial_id,
                                          seed=ctx.seed, classes=ctx.classes)
        if ctx.on_result_write is not None:
            ctx.on_result_write(self.current_trial_id)
        summary, objective = trial_summary(ctx, results, preds, self.last_result)
        record = {**self._record_head(reason, objective, [r.best_epoch for r in results]), **summary, "node_ids": sorted(set(actor_nodes)),
                  "folds": [{"fold": r.index, "name": r.name, "node_id": node_of.get(r.index), **r.metrics()} for r in results]}
        write_trial_record(ctx.record_dir, self.current_trial_id, record)
        return summary

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
            "seconds": time.perf_counter() - self.t0,
            "started_at": self.started_at,
            "ended_at": time.time(),
        }

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
        if getattr(self, "_set", None) is not None:  # pooled: back to the pool, which ends them
            self.ctx.pool.give_back(self._set)
            self._set = None
            return
        if getattr(self, "fold_actors", None) is not None:
            self.fold_actors.kill()
