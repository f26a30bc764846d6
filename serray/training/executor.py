"""The fold executor: the one place that decides where folds train and trains them.

Every driver trains its folds through this module (and ``serray train`` asks
:func:`choose_execution` where its folds should go): ``serray train``
(:func:`serray.training.run.train_run`), ``serray seeds``
(:func:`serray.training.seeds.train_seeds`), a tune trial
(:class:`serray.tune.trainable.FoldsTrainable`), a nested search
(:mod:`serray.tune.nested`) and intermediate fusion (:mod:`serray.ensemble.intermediate`).
Where a fold trains:

* **in this process** (:func:`train_here`, and :func:`run_folds` with ``parallel=False``):
  one fold after another (or in lock-step for an ``on_epoch`` callback), with the torch
  threads a fold actor would get (:func:`in_process_threads`), so the numbers are those
  of the actor path;
* **on fold actors** (:class:`FoldActors`, :func:`run_folds` with ``parallel=True``):
  Ray actors (:mod:`serray.training.actors`) that each host a group of folds
  (:func:`~serray.training.actors.fold_groups`), trained to the end in one call, in
  lock-step, or ``n`` epochs per call (a tune trial's report); the warm pool of a search
  (:mod:`serray.tune.pool`) lends such sets;
* **as Ray tasks** (:func:`run_tasks`): one task per job (a seed's fold, a nested
  search's outer fold), results handed back as they finish.

What the folds produced is written by :mod:`serray.training.records`.

Example:
    >>> in_process_threads(10) >= 1
    True
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from serray.models import registry
from serray.models.registry import ModelSpec
from serray.training.actors import SharedInputs, fold_actor_class, fold_groups, fold_resources, put_inputs, set_threads
from serray.training.data import TrainingInputs
from serray.training.resources import Resources
from serray.training.trainer import FoldResult, FoldTrainer, check_config, fold_trainer

__all__ = ["EpochCallback", "IN_PROCESS_WORK_S", "choose_execution", "set_threads", "torch_threads", "in_process_threads", "train_here", "run_folds",
           "FoldActors", "fold_task", "run_tasks"]

log = logging.getLogger(__name__)

#: ``on_epoch(epoch, per_fold_metrics)``; return ``True`` to stop every fold now.
EpochCallback = Callable[[int, list[dict]], Any]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (``None``: leave them, and import no torch)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    set_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def in_process_threads(n_folds: int) -> int:
    """Torch threads of in-process training: what each fold actor of a local Ray would get
    (the machine's CPUs shared by one actor per CPU, at most one per fold), so that a run
    gives the same numbers in this process and on Ray.

    Example:
        >>> in_process_threads(10) >= 1
        True
    """
    cpus = os.cpu_count() or 1
    return max(1, int(cpus / max(1, min(n_folds, cpus))))


#: Estimated training seconds (all folds one after another, every epoch of the budget)
#: below which a job without ``--address`` trains in this process: a local Ray and its
#: fold actors cost about 6 s to start, after which 2 cores halve the rest, so Ray only
#: pays for itself above about 12 s of work.
IN_PROCESS_WORK_S = 12.0
#: Features larger than this skip the estimate and go to Ray (the probe epoch would be long).
PROBE_MAX_BYTES = 64 * 2**20


def choose_execution(spec: Any, cfg: Mapping[str, Any], exp: Any, normalize: str, seed: int,
                     resources: Resources | None = None) -> tuple[bool, str]:
    """``(parallel, why)``: Ray fold actors, or this process for small work without ``--address``
    (``resources``: its ``address`` and ``device``; default a local Ray, device ``auto``).

    scikit-learn models always train here. For a torch model, one epoch of the first fold
    is timed (a throw-away trainer; the run itself starts afresh, so the numbers do not
    depend on the choice) and multiplied by the epoch budget and the number of folds.
    """
    from serray.training.trainer import resolve_device, total_epochs

    address, device = (resources.address, resources.device) if resources is not None else (None, "auto")
    if address is not None:
        return True, "on Ray fold actors (joining a cluster)"
    if spec.backend == "sklearn":
        return False, "in this process (a scikit-learn model without --address)"
    if resolve_device(device) != "cpu":
        return True, "on Ray fold actors (GPU)"
    size = sum(p.data.nbytes + (p.offsets.nbytes if p.offsets is not None else 0) for p in exp.inputs.packed.values())
    if size > PROBE_MAX_BYTES:
        return True, f"on Ray fold actors ({size / 2**20:.0f} MB of features)"
    with torch_threads(in_process_threads(len(exp.folds))):
        trainer = fold_trainer(spec, cfg, exp.inputs, exp.folds[0], normalize=normalize, seed=seed, device="cpu")
        t0 = time.perf_counter()
        trainer.step()
        estimate = (time.perf_counter() - t0) * int(total_epochs(spec, cfg) or 1) * len(exp.folds)
    if estimate < IN_PROCESS_WORK_S:
        return False, f"in this process (estimated {estimate:.1f} s of training, under {IN_PROCESS_WORK_S:.0f} s)"
    return True, f"on Ray fold actors (estimated {estimate:.0f} s of training)"


def train_here(
    folds: Sequence[Any],
    build: Callable[[Any], FoldTrainer],
    *,
    threads: int | None = None,
    after: Callable[[Any, FoldTrainer, FoldResult], None] | None = None,
    keep: bool = False,
) -> list[FoldResult]:
    """Train each fold's trainer (``build(fold)``) to the end in this process, one fold after
    another (only one fold's data in memory at a time), with ``threads`` torch threads.

    ``after(fold, trainer, result)`` runs after each fold (e.g. to read the trained model);
    ``keep`` puts each fold's trained model in ``FoldResult.kept``.
    """
    results = []
    with torch_threads(threads):
        for i, fold in enumerate(folds, 1):
            trainer = build(fold)
            res = trainer.run(keep)
            if after is not None:
                after(fold, trainer, res)
            results.append(res)
            log.info("fold %d/%d (%s) done in %.1f s: test UA %.3f", i, len(folds), res.name, res.seconds,
                     res.metrics()["test_ua"])
    return results


def _metrics_row(fold: Any, m: dict) -> dict:
    return {"fold": int(fold.index), "fold_name": str(fold.name), **m}


def _lockstep(
    steppers: Sequence[Callable[[], Any]],
    members: Sequence[Sequence[int]],
    folds: Sequence[Any],
    gather: Callable[[list[Any]], list[list[dict]]],
    on_epoch: EpochCallback | None,
) -> None:
    """Step every group with unfinished folds, gather, report; until all stop or the
    callback says stop. ``members[g]`` lists the fold positions group ``g`` hosts."""
    last: list[dict] = [{} for _ in folds]
    active = list(range(len(steppers)))
    epoch = 0
    while active:
        epoch += 1
        outs = gather([steppers[g]() for g in active])
        for g, ms in zip(active, outs):
            for pos, m in zip(members[g], ms):
                last[pos] = m
        active = [g for g in active if not all(last[pos]["stopped"] for pos in members[g])]
        if on_epoch is not None:
            stop = on_epoch(epoch, [_metrics_row(f, m) for f, m in zip(folds, last)])
            if stop is True:
                log.info("on_epoch asked to stop after epoch %d; finalising every fold at its best epoch", epoch)
                break


class FoldActors:
    """One configuration's fold actors: actor ``g`` hosts the folds at positions ``groups[g]``.

    Made by :meth:`start` (new actors) or from a set the search's warm pool lends
    (:mod:`serray.tune.pool`); :meth:`reset` gives them another configuration.
    """

    def __init__(self, actors: Sequence[Any], groups: Sequence[Sequence[int]], folds: Sequence[Any]) -> None:
        self.actors = list(actors)
        self.groups = [list(g) for g in groups]
        self.folds = list(folds)

    @classmethod
    def start(cls, model: ModelSpec | str, config: Mapping[str, Any], shared: SharedInputs, folds: Sequence[Any], *,
              per_actor: int, num_cpus: float, num_gpus: float, normalize: str, seed: int, device: str,
              options: Mapping[str, Any] | None = None) -> "FoldActors":
        """Start one actor per group of at most ``per_actor`` folds (:func:`fold_groups`), each
        with ``num_cpus``/``num_gpus`` and ``max(1, floor(num_cpus))`` torch threads."""
        groups = fold_groups(folds, per_actor)
        opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, **dict(options or {})}
        actors = [
            fold_actor_class().options(**opts).remote(
                model, config, shared, [folds[i] for i in group], normalize, seed, device, max(1, int(num_cpus)),
            )
            for group in groups
        ]
        return cls(actors, groups, folds)

    @classmethod
    def warm(cls, model: ModelSpec | str, shared: SharedInputs, folds: Sequence[Any], groups: Sequence[Sequence[int]], *,
             normalize: str, seed: int, device: str, threads: int, config: Mapping[str, Any] | None = None,
             ahead: int = 0) -> "FoldActors":
        """Start warm actors for a search's pool (:mod:`serray.tune.pool`): no CPU asked (the
        trials' placement groups hold it); without ``config`` they wait for their first
        :meth:`reset`, with it they train ``ahead`` epochs of it at once."""
        actor = fold_actor_class().options(num_cpus=0)
        actors = [actor.remote(model, config, shared, [folds[i] for i in g], normalize, seed, device, threads, ahead)
                  for g in groups]
        return cls(actors, groups, folds)

    def reset(self, model: ModelSpec | str, config: Mapping[str, Any], seed: int) -> int:
        """Give every actor this configuration; the epochs all of them had trained ahead for it."""
        import ray

        return min(ray.get([a.reset.remote(model, config, seed) for a in self.actors]))

    def run(self, epochs: int | None, which: Sequence[int] | None = None) -> dict[int, list[list[dict]]]:
        """Actor index -> its folds' metrics per epoch, after up to ``epochs`` epochs
        (``None``: to the end) of the actors ``which`` (default all)."""
        import ray

        which = list(range(len(self.actors))) if which is None else list(which)
        return dict(zip(which, ray.get([self.actors[g].run.remote(epochs) for g in which])))

    def lockstep(self, on_epoch: EpochCallback | None) -> None:
        """One epoch of every actor with unfinished folds at a time, ``on_epoch`` after each."""
        import ray

        _lockstep([a.step.remote for a in self.actors], self.groups, self.folds, ray.get, on_epoch)

    def finalize(self, keep: bool = False) -> list[FoldResult]:
        """Every fold's best-epoch logits, in fold position order (with the trained models when ``keep``)."""
        import ray

        results: list[FoldResult | None] = [None] * len(self.folds)
        for group, res in zip(self.groups, ray.get([a.finalize.remote(keep) for a in self.actors])):
            for pos, r in zip(group, res):
                results[pos] = r
        return list(results)  # type: ignore[arg-type]

    def checkpointable(self) -> bool:
        """Whether every fold's trainer can save all of its training state."""
        import ray

        return all(ray.get([a.checkpointable.remote() for a in self.actors]))

    def save_state(self) -> list[tuple[bytes, str]]:
        """Every fold's training state (``(safetensors bytes, JSON text)``), in fold position order."""
        import ray

        out: list[tuple[bytes, str] | None] = [None] * len(self.folds)
        for group, states in zip(self.groups, ray.get([a.save_state.remote() for a in self.actors])):
            for pos, state in zip(group, states):
                out[pos] = state
        return list(out)  # type: ignore[arg-type]

    def load_state(self, states: Sequence[tuple[bytes, str]]) -> None:
        """Continue every fold from :meth:`save_state` (same folds, model and seed)."""
        import ray

        ray.get([a.load_state.remote([states[pos] for pos in group]) for a, group in zip(self.actors, self.groups)])

    def node_ids(self) -> list[str]:
        """The Ray node of each actor."""
        import ray

        return ray.get([a.node_id.remote() for a in self.actors])

    def kill(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


def run_folds(
    model: ModelSpec | str,
    config: Mapping[str, Any],
    inputs: TrainingInputs | SharedInputs,
    folds: Sequence[Any],
    *,
    normalize: str = "global",
    seed: int = 0,
    resources: Resources | None = None,
    actor_options: Mapping[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    keep_models: bool = False,
) -> list[FoldResult]:
    """Train every fold of one configuration and return their results in fold order.

    Args:
        model: Registry name or :class:`ModelSpec`.
        config: The model's full config.
        inputs: Features and labels (:class:`TrainingInputs`), or their object-store
            references from :func:`put_inputs` (reuse them across configurations).
        folds: Folds with ``index``, ``name``, ``train``, ``validation``, ``test``.
        normalize: ``"speaker"``, ``"global"`` or ``"none"`` (:mod:`serray.training.data`).
        seed: Seed of every fold's trainer (each fold trains from the same seed).
        resources: Where the folds train (:class:`~serray.training.resources.Resources`;
            default: local Ray). ``device`` (``"cpu"``, ``"cuda"`` or ``"auto"``) is
            resolved inside each actor. ``parallel`` ``True`` or ``None``: Ray fold
            actors (:class:`FoldActors`; in lock-step when ``on_epoch`` is given; Ray
            started by :meth:`~serray.training.resources.Resources.start_ray`).
            ``False``: in this process; folds run one after another, or in lock-step
            when ``on_epoch`` is given, with the torch threads a fold actor would get
            (:func:`in_process_threads`). ``fold_cpus``/``fold_gpus``: each fold actor's
            CPUs and GPUs (default: the cluster's CPUs shared evenly by one actor per
            CPU, and an even share of its GPUs unless the device is ``"cpu"``, see
            :func:`fold_resources`); ``folds_per_actor``: folds hosted by each actor
            (default: as many as needed for all actors to fit at once).
        actor_options: Extra ``.options()`` for the actors (e.g. a placement-group
            ``scheduling_strategy`` inside a Tune trial).
        on_epoch: ``on_epoch(epoch, metrics)`` after every lock-step epoch; ``metrics``
            has one dict per fold (``fold``, ``fold_name`` and the keys of a trainer's
            ``step()``; a stopped fold repeats its last dict). Returning ``True`` stops
            all folds; they are finalised at their best epoch so far.
        keep_models: Return each fold's trained model in ``FoldResult.kept``
            (:meth:`~serray.training.interface.FoldTrainer.kept_state`; written by
            :mod:`serray.artifacts`). Changes no number.

    Raises:
        ValueError: Bad config, no folds, or an actor size larger than the cluster.
    """
    spec = registry.get(model) if isinstance(model, str) else model
    config = check_config(spec, config)
    if not folds:
        raise ValueError("run_folds needs at least one fold")
    res = resources if resources is not None else Resources()
    if res.parallel is False:
        if isinstance(inputs, SharedInputs):
            inputs = inputs.resolve()
        # torch: what a fold actor would use, for the same numbers
        threads = in_process_threads(len(folds)) if spec.backend == "torch" else None
        return _run_local(spec, config, inputs, folds, normalize=normalize, seed=seed, device=res.device, threads=threads,
                          on_epoch=on_epoch, keep=keep_models)
    return _run_on_actors(spec, config, inputs, folds, normalize=normalize, seed=seed, resources=res,
                          actor_options=actor_options, on_epoch=on_epoch, keep=keep_models)


def _run_on_actors(spec: ModelSpec, config: Mapping[str, Any], inputs: TrainingInputs | SharedInputs,
                   folds: Sequence[Any], *, normalize: str, seed: int, resources: Resources,
                   actor_options: Mapping[str, Any] | None, on_epoch: EpochCallback | None,
                   keep: bool = False) -> list[FoldResult]:
    """:func:`run_folds` on :class:`FoldActors` sized by :func:`fold_resources` (killed at the end)."""
    resources.start_ray()
    shared = inputs if isinstance(inputs, SharedInputs) else put_inputs(inputs)
    opts = dict(actor_options or {})
    folds_per_actor = resources.folds_per_actor
    if "scheduling_strategy" in opts and folds_per_actor is None:
        folds_per_actor = 1  # the placement group was sized by the caller
    device = resources.device
    per_actor, cpus, gpus = fold_resources(len(folds), resources.fold_cpus, resources.fold_gpus, device, folds_per_actor,
                                           custom=resources.fold_custom)
    if resources.fold_custom and "scheduling_strategy" not in opts:  # a placement group's bundles hold them
        opts.setdefault("resources", dict(resources.fold_custom))
    log.info("%d fold(s) on %d actor(s) (cpu=%s, gpu=%s each)", len(folds), math.ceil(len(folds) / per_actor), cpus, gpus)
    actors = FoldActors.start(spec, config, shared, folds, per_actor=per_actor, num_cpus=cpus, num_gpus=gpus,
                              normalize=normalize, seed=seed, device=device, options=opts)
    try:
        if on_epoch is None:  # nothing to report per epoch: each actor trains its folds to the end in one call
            actors.run(None)
        else:
            actors.lockstep(on_epoch)
        return actors.finalize(keep)
    finally:
        actors.kill()


def _run_local(spec: ModelSpec, config: Mapping[str, Any], inputs: TrainingInputs, folds: Sequence[Any], *,
               normalize: str, seed: int, device: str, threads: int | None,
               on_epoch: EpochCallback | None, keep: bool = False) -> list[FoldResult]:
    def build(fold: Any) -> FoldTrainer:
        return fold_trainer(spec, config, inputs, fold, normalize=normalize, seed=seed, device=device)

    if on_epoch is None:
        return train_here(folds, build, threads=threads, keep=keep)
    with torch_threads(threads):
        built = [build(f) for f in folds]
        _lockstep([(lambda tr=tr: [tr.step()]) for tr in built], [[i] for i in range(len(folds))], folds,
                  lambda outs: outs, on_epoch)
        return [tr.result(keep) for tr in built]


def fold_task(model: ModelSpec | str, config: Mapping[str, Any], shared: SharedInputs, fold: Any, normalize: str,
              seed: int, device: str, threads: int, keep: bool = False) -> FoldResult:
    """One fold trained to the end inside a Ray task, with ``threads`` torch threads (its
    trained model in ``FoldResult.kept`` when ``keep``)."""
    set_threads(threads)
    return fold_trainer(model, config, shared.resolve(), fold, normalize=normalize, seed=seed, device=device).run(keep)


def run_tasks(fn: Callable[..., Any], jobs: Iterable[tuple[Any, tuple]], *, num_cpus: float, num_gpus: float = 0.0,
              max_retries: int | None = None, custom: Mapping[str, float] | None = None) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(*args)`` as one Ray task per ``(key, args)`` of ``jobs`` (Ray must be running);
    yield ``(key, result)`` in the order the tasks finish. ``custom``: custom Ray resources
    each task asks for (:attr:`~serray.training.resources.Resources.fold_custom`).

    Tasks reuse Ray's worker processes, so thousands of jobs cost no actor start-up each.
    """
    import ray

    opts: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if max_retries is not None:
        opts["max_retries"] = max_retries
    if custom:
        opts["resources"] = dict(custom)
    task = ray.remote(fn).options(**opts)
    pending = {task.remote(*args): key for key, args in jobs}
    remaining = list(pending)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        for ref in ready:
            yield pending[ref], ray.get(ref)
