"""Ray Tune wiring: one trial = one configuration trained on every fold, folds in parallel.

Each trial is a class trainable (:class:`serray.tune.trainable.FoldsTrainable`) whose
resource request is one placement group: a tiny bundle for the trainable itself plus one
bundle per fold actor. The trainable trains its folds through the fold executor
(:class:`serray.training.executor.FoldActors`, Ray actor processes) and reports to Tune
at the epochs where ASHA can act (:func:`report_epochs`; every epoch with
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
unfinished ones go on from their last checkpoint (:mod:`serray.tune.checkpoint`: saved
at ASHA's rungs and every few minutes; from their first epoch without one), errored ones
restart from their first epoch. serray's trial record is the proof
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pandas as pd

from serray.tune.options import PreparedSearch, SearchOptions, check_search, load_search
from serray.tune.outputs import check_objective, leaderboard, reconcile_for_resume, write_outcome
from serray.tune.state import (
    check_resume, record_files, recording, replaced, search_settings, settle, state_files, verify_state, write_search,
)
from serray.tune.trial import FAULT_ENV, OBJECTIVE, OBJECTIVES, TuneContext, report_epochs, trial_config
from serray.workdir import Workdir

__all__ = ["TuneContext", "FoldsTrainable", "TuneOutcome", "tune_model", "experiment_dir", "report_epochs",
           "trial_config", "OBJECTIVES", "FAULT_ENV"]

log = logging.getLogger(__name__)

#: Seconds Tune gives a stopping trial (e.g. stopped by ASHA as the search ends) to write
#: its predictions and record before it kills the actor (Tune's own limit is 10 s).
STOP_GRACE_S = int(os.environ.get("SERRAY_TUNE_STOP_GRACE_S", "300"))
def experiment_dir(workdir: str | Path, name: str, storage: str | None = None) -> str:
    """Where Tune keeps the experiment: ``<storage or W/tune>/<name>``."""
    base = storage or str(Workdir(Path(workdir).resolve()).tune_dir)
    return f"{base.rstrip('/')}/{name}"


def __getattr__(name: str) -> Any:  # lazy: importing this module must not import Ray Tune
    if name == "FoldsTrainable":
        from serray.tune.trainable import FoldsTrainable

        return FoldsTrainable
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
    on_result_write: Callable[[str], None] | None = None,
) -> TuneOutcome:
    """Search a model's hyperparameters with Optuna TPE + ASHA; every trial trains all folds.

    Args:
        run: The :class:`~serray.training.spec.RunSpec`: model, features, protocol,
            labels, normalisation, preset (the space's own preset wins), config (the
            starting point the space searches around) and ``seed`` (of the Optuna
            sampler and of every trial's training).
        options: The :class:`~serray.tune.options.SearchOptions` (space, trials, name,
            epochs, ASHA, resume, and the :class:`~serray.training.resources.Resources`:
            cluster, device, fold actors). Here ``fold_cpus``/``fold_gpus`` are each
            fold actor's: a trial starts as many actors of that size as fit at once (at
            most one per fold, or ``folds_per_actor`` each) and spreads its folds over
            them (default: one actor per cluster CPU, so one trial's folds fill the
            cluster). A fold actor that no single node can hold is refused before any
            trial starts (Ray would wait for it forever). ASHA's default grace
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
        on_result_write: ``on_result_write(trial_id)``, run in a trial's process between
            writing its predictions and its record (a picklable callable; tests use it to
            interrupt or slow a result write).

    Raises:
        serray.tune.space.SearchSpaceError: Malformed space (before any trial starts).
        FileExistsError: The experiment exists and ``resume`` is not set.
    """
    import ray

    t0 = time.perf_counter()
    options = options or SearchOptions()
    check_objective(objective)
    prep = load_search(run, options, "tune")
    if options.scheduler == "pbt":
        from serray.tune.pbt import pbt_space

        pbt_space(prep.space, prep.base)  # a space without continuous parameters: refused before Ray starts
    path, local_path, settings = _check_experiment(prep, options, objective, storage)
    launch: _Launch | None = None
    sizes = {"max_concurrent_trials": max_concurrent_trials, "time_budget_s": time_budget_s}
    try:
        if ray.is_initialized():  # warm fold actors boot while this process checks the model (and imports torch)
            options.resources.start_ray()  # Ray runs: this only checks the fold request against its nodes
            launch = _launch(prep, options, **sizes)
        check_search(prep)
        options.resources.start_ray()  # a fold actor that fits no node is refused before any trial starts
        launch = launch or _launch(prep, options, **sizes)
        record_dir = Workdir(Path(prep.run.workdir).resolve()).tune_trials(prep.name) if local_path is None else local_path / "trials"
        trainable = _trainable(prep, options, launch, record_dir, objective, tensorboard, on_result_write)
        notes: list[str] = []
        tuner, unknown = _tuner(prep, options, trainable, path, local_path, record_dir, settings, notes, **sizes,
                                max_failures=max_failures, tensorboard=tensorboard, verbose=verbose)
        results = _fit(tuner, local_path)
    finally:
        if launch is not None and launch.pool is not None:
            launch.pool.shutdown()
    out_dir = Path(path) if local_path is not None else Workdir(prep.run.workdir).tune(prep.name)
    return _outcome(results, prep, path, out_dir, record_dir, unknown, objective, notes, max_failures, t0, options.keep_models)


def _outcome(results: Any, prep: PreparedSearch, path: str, out_dir: Path, record_dir: Path, unknown: list[str],
             objective: str, notes: list[str], max_failures: int, t0: float, keep_models: str = "none") -> TuneOutcome:
    """The leaderboard and best.yaml written (:func:`serray.tune.outputs.write_outcome`); the
    best trial's fold models kept (``keep_models="best"``); the outcome."""
    board = leaderboard(results, record_dir, prep.space.names(), prep.space, extra=unknown)
    best, best_yaml = write_outcome(board, prep, out_dir, record_dir, objective, path, notes)
    if keep_models != "none":
        _settle_kept_models(prep, str(best["trial_id"]), keep_models, notes)
    n_errors = int(board["status"].str.startswith("error").sum())
    if n_errors:
        notes.append(f"{n_errors} trial(s) failed after {max_failures} retries; see their error files under {path}")
    return TuneOutcome(prep.name, path, board, best, best_yaml, time.perf_counter() - t0, notes)


def _settle_kept_models(prep: PreparedSearch, best: str, keep_models: str, notes: list[str]) -> None:
    """With ``best``: remove the kept models of every trial but the best one; note where they are."""
    from serray.artifacts.keep import prune_kept_models

    w = Workdir(Path(prep.run.workdir).resolve())
    if keep_models == "best":
        prune_kept_models(w, prep.name, [best])
    folder = w.kept_config(prep.name, best, prep.run.seed)
    if folder.is_dir():
        notes.append(f"the best trial's fold models: {folder} (serray predict / serray export)")
    else:
        notes.append(f"the best trial {best} kept no fold models (it finished before --keep-models applied, or elsewhere)")


def _check_experiment(prep: PreparedSearch, options: SearchOptions, objective: str,
                      storage: str | None) -> tuple[str, Path | None, dict]:
    """``(path, local path or None, settings)`` of the experiment, refused before Ray starts when
    it exists without ``resume``, or a resume would change its objective, settings or state."""
    path = experiment_dir(prep.run.workdir, prep.name, storage)
    local_path = None if "://" in path else Path(path)
    if options.resume and local_path is not None:
        check_objective(objective, local_path / "trials")
    if not options.resume and local_path is not None and (local_path / "tuner.pkl").exists():
        raise FileExistsError(f"{path}: experiment {prep.name!r} exists; pass --resume to continue it or --name NEW to start another")
    return path, local_path, _check_state(local_path, search_settings(prep, options, objective), options.resume)


def _tuner(prep: PreparedSearch, options: SearchOptions, trainable: Any, path: str, local_path: Path | None,
           record_dir: Path, settings: dict, notes: list[str], **tuner_options: Any) -> tuple[Any, list[str]]:
    """``(tuner, finished trials unknown to Tune's state)``: the interrupted experiment
    restored, or a new one (its settings and ``tuner.pkl``'s checksum recorded)."""
    from ray import tune

    if options.resume and tune.Tuner.can_restore(path):
        return _restored_tuner(path, local_path, record_dir, prep, trainable, notes)
    if options.resume:
        log.warning("nothing to resume at %s; starting a new experiment", path)
    tuner = _new_tuner(prep, options, trainable, path, notes, local=local_path is not None, **tuner_options)
    if local_path is not None:
        write_search(local_path, settings)
        record_files(local_path, ["tuner.pkl"])
    return tuner, []


def _fit(tuner: Any, local_path: Path | None = None) -> Any:
    """``tuner.fit()`` with serray's Tune settings (loggers, checkpoint period, stop grace),
    recording the checksums of Tune's state files in ``local_path`` (:mod:`serray.tune.state`)."""
    # Tune's JSON and CSV loggers are passed explicitly; stop it adding its TBX logger beside them.
    env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "1")}
    with _environ(env), warnings.catch_warnings(), _stop_grace(), recording(local_path):
        # a restarted trial reports its first epochs again; Optuna keeps the first report
        warnings.filterwarnings("ignore", message="The reported value is ignored because this `step`")
        results = tuner.fit()
    if local_path is not None:
        settle(local_path)
    return results


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block (Tune reads its settings from the environment), then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _stop_grace() -> Iterator[None]:
    """Let stopping trials finish their result write (Tune kills them after 10 s otherwise).

    A trial that ASHA stops is finalised when its actor is reused for the next trial or
    stopped; as the search ends, Tune stops the cached actors and kills any still busy
    after a fixed 10 s, which lost the last stopped trial's predictions and record.

    Ray 2.60 has no public setting for that limit: ``TUNE_FORCE_TRIAL_CLEANUP_S`` is how
    long Tune lets stopping actors be before it cleans them up at all, but the grace each
    then gets is ``TuneController._actor_force_cleanup_timeout``, fixed at 10 in its
    ``__init__`` and read by nothing else. So, for the duration of ``fit`` only, the
    controller's ``__init__`` is wrapped to set it (:func:`serray.tune.state.replaced`).
    """
    from ray.tune.execution.tune_controller import TuneController

    init = TuneController.__init__

    def init_with_grace(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._actor_force_cleanup_timeout = STOP_GRACE_S

    with replaced(TuneController, __init__=init_with_grace):
        yield


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

    res = options.resources
    per, cpu, gpu = fold_resources(len(prep.exp.folds), res.fold_cpus, res.fold_gpus, res.device, res.folds_per_actor,
                                   custom=res.fold_custom)
    shared = put_inputs(prep.exp.inputs)
    if not fold_pool.pool_enabled(res.address, gpu):
        return _Launch(shared, per, cpu, gpu)
    groups = fold_groups(prep.exp.folds, per)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    n_sets = fold_pool.pool_sets(cpus, cpu, len(groups), options.num_samples, max_concurrent_trials)
    point = None if options.resume or options.scheduler == "pbt" else prep.space.point(prep.base)
    epochs = fold_pool.ahead_epochs(prep.grace, prep.max_t, resume=options.resume, time_budget_s=time_budget_s,
                                    n_sets=n_sets, first_point=point)
    ahead = None
    if epochs:
        ahead = (trial_config(prep.spec, prep.space, prep.base, options.max_epochs, prep.space.trial_params(point)), epochs)
    pool = fold_pool.start_pool(
        prep.spec.name, shared, prep.exp.folds, groups, n_sets=n_sets, normalize=prep.run.normalize, seed=prep.run.seed,
        device=res.device, threads=max(1, int(cpu)), ahead=ahead,
    )
    return _Launch(shared, per, cpu, gpu, pool)


def _trainable(prep: PreparedSearch, options: SearchOptions, launch: _Launch, record_dir: Path, objective: str,
               tensorboard: bool = False, on_result_write: Callable[[str], None] | None = None) -> Any:
    """The trainable with its features, context and placement group: an empty head bundle
    (the trainable itself needs no CPU) and one bundle per fold actor (warm pooled actors
    ask for no CPU themselves: the bundles hold it for them)."""
    from ray import tune

    from serray.artifacts.keep import feature_inputs

    per, cpu, gpu = launch.per, launch.cpu, launch.gpu
    n_actors = math.ceil(len(prep.exp.folds) / per)
    # custom resources (Resources.fold_custom, e.g. {"spot": 0.01}) pin the trial, trainable and fold actors, to nodes that have them
    custom = {k: float(v) for k, v in (options.resources.fold_custom or {}).items()}
    bundles = [dict(custom)] + [{"CPU": cpu, **({"GPU": gpu} if gpu else {}), **custom} for _ in range(n_actors)]
    log.info("each trial: %d fold actor(s) x %d fold(s), cpu=%s gpu=%s per actor", n_actors, per, cpu, gpu)
    run, exp = prep.run, prep.exp
    ctx = TuneContext(
        workdir=str(Path(run.workdir).resolve()), experiment=prep.name, model=prep.spec.name, base_config=prep.base,
        folds=exp.folds, classes=exp.classes, normalize=run.normalize, seed=run.seed, device=options.resources.device,
        fold_cpus=cpu, fold_gpus=gpu, folds_per_actor=per, max_epochs=options.max_epochs, record_dir=str(record_dir),
        space=prep.space, objective=objective, pool=launch.pool, report_at=_report_at(prep, options, tensorboard),
        on_result_write=on_result_write, checkpoint_every_s=float(options.checkpoint_every_s),
        checkpoint_at=() if options.scheduler == "pbt" else report_epochs(prep.grace, prep.max_t, options.reduction_factor),
        finalize_on_stop=options.scheduler != "pbt", keep_models=options.keep_models,
        kept_features=feature_inputs(exp.features, run.params_for) if options.keep_models != "none" else None,
    )
    from serray.tune.trainable import FoldsTrainable

    return tune.with_resources(tune.with_parameters(FoldsTrainable, shared=launch.shared, ctx=ctx),
                               tune.PlacementGroupFactory(bundles))


def _report_at(prep: PreparedSearch, options: SearchOptions, tensorboard: bool) -> tuple[int, ...]:
    """Where trials' reports end (:func:`report_epochs`); ``()``, a report every epoch, when
    asked for, for TensorBoard's curves, and on resume (the restored scheduler's rungs are
    those of the first run's options)."""
    if options.report_every_epoch or tensorboard or options.resume:
        return ()
    if options.scheduler == "pbt":
        from serray.tune.pbt import pbt_report_at

        return pbt_report_at(prep.grace, prep.max_t)
    return report_epochs(prep.grace, prep.max_t, options.reduction_factor)


def _restored_tuner(path: str, local_path: Path | None, record_dir: Path, prep: PreparedSearch, trainable: Any,
                    notes: list[str]) -> tuple[Any, list[str]]:
    """The interrupted experiment at ``path``, reconciled with serray's trial records."""
    from ray import tune

    unknown: list[str] = []
    if local_path is not None:
        line, unknown = reconcile_for_resume(local_path, record_dir, Path(prep.run.workdir).resolve(), prep.name)
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
    """A new Tuner: Optuna TPE (the base config first, where the space holds it) and ASHA,
    or population-based training (:mod:`serray.tune.pbt`)."""
    from ray import tune

    if options.scheduler == "pbt":
        from serray.tune.pbt import pbt_scheduler, pbt_space

        param_space, bounds = pbt_space(prep.space, prep.base)
        searcher, scheduler = None, pbt_scheduler(OBJECTIVE, prep.grace, bounds, param_space)
    else:
        param_space = None
        searcher, scheduler = _asha(prep, options, notes)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=options.num_samples,
            max_concurrent_trials=max_concurrent_trials, time_budget_s=time_budget_s, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=prep.name,
            storage_path=path.rsplit("/", 1)[0],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # each trial's last few checkpoints (serray.tune.checkpoint), none at the end (the record is the result)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=options.num_checkpoints, checkpoint_at_end=False),
            # Tune's experiment state reaches the storage at most this often: every
            # second on local disk, so a resume after a hard kill lags at most ~1 s
            sync_config=tune.SyncConfig(sync_period=1 if local else 30),
            verbose=verbose,
            callbacks=_logger_callbacks(tensorboard),
        ),
    )


def _asha(prep: PreparedSearch, options: SearchOptions, notes: list[str]) -> tuple[Any, Any]:
    """``(Optuna TPE searcher, ASHA scheduler)`` of a search."""
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
    return searcher, scheduler
