"""Warm fold actors for a search: started before Tune, lent to one trial at a time.

A trial's fold actors used to start inside the trial. Each imports torch (about 2.5 s of
CPU on the 2-core machines here) before it can build its folds, so the first trial waited
5-7 s for its actors while the search as a whole waited for the trial. On a local,
single-node Ray with CPU folds, :func:`serray.tune.runner.tune_model` now starts them
itself (:func:`start_pool`) as soon as the features are in the object store, and they boot
while Tune starts: its import, its driver, the trainable's own process.

* **Borrowing.** A trial's trainable borrows a whole set (one actor per fold group) from
  a :class:`FoldPool` and returns it when the trainable ends (with ``reuse_actors`` that is
  at the end of the search). Each trial's placement group still reserves the folds' CPUs;
  the pooled actors ask for none, so Tune runs exactly as many trials at once as before.
  A trainable that finds no free set starts its own actors in its placement group, as
  before; a set with a dead actor is killed, not returned.
* **Training ahead.** When one trial at a time fits the machine and the search is new,
  the first trial's configuration is known before Tune asks for it: Optuna evaluates the
  base configuration first. The pooled actors then build its trainers and train its first
  epochs (ASHA's grace period, before which no trial can be stopped) while Tune starts.
  The trial finds those epochs done and reports them in order; a trial with any other
  configuration rebuilds its trainers. Each fold's trainer has its own seeded random
  streams, so the numbers are the same either way (test: the same leaderboard and logits).

Example:
    >>> pool_sets(cluster_cpus=2, actor_cpus=1.0, n_actors=2, num_samples=20)
    1
    >>> pool_sets(cluster_cpus=16, actor_cpus=1.0, n_actors=5, num_samples=20, max_concurrent=2)
    2
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["FoldPool", "pool_sets", "pool_enabled", "start_pool", "ahead_epochs"]

log = logging.getLogger(__name__)


class _Broker:
    """Which actor sets are lent (a Ray actor of no CPU; one per search)."""

    def __init__(self, n_sets: int) -> None:
        self.free = list(range(n_sets))

    def acquire(self) -> int | None:
        return self.free.pop(0) if self.free else None

    def release(self, index: int) -> None:
        if index not in self.free:
            self.free.append(index)
            self.free.sort()


@dataclass(frozen=True)
class FoldPool:
    """Warm fold-actor sets and their broker (actor handles; sent to the trainables)."""

    broker: Any
    sets: Sequence[Sequence[Any]]

    def borrow(self) -> tuple[int, list] | None:
        """``(set index, its actors)``, or ``None`` when every set is lent."""
        import ray

        index = ray.get(self.broker.acquire.remote())
        return None if index is None else (index, list(self.sets[index]))

    def give_back(self, index: int) -> None:
        """Return a set whose actors all answer; kill it (and keep it lent) otherwise."""
        import ray

        actors = self.sets[index]
        try:
            ray.get([a.node_id.remote() for a in actors], timeout=60)
        except Exception:  # noqa: BLE001 - a dead or stuck actor: this set is not lent again
            log.warning("fold-actor set %d did not answer; it is retired", index)
            for a in actors:
                ray.kill(a)
            return
        ray.get(self.broker.release.remote(index))

    def shutdown(self) -> None:
        """Kill every pooled actor and the broker (the search is over)."""
        import ray

        for actors in self.sets:
            for a in actors:
                ray.kill(a)
        ray.kill(self.broker)


def pool_sets(cluster_cpus: float, actor_cpus: float, n_actors: int, num_samples: int,
              max_concurrent: int | None = None) -> int:
    """How many trials can run at once, so how many actor sets a pool holds (at least 1)."""
    fit = max(1, int(cluster_cpus // max(actor_cpus * n_actors, 1e-9) + 1e-9)) if actor_cpus > 0 else 1
    return max(1, min(fit, num_samples, max_concurrent or fit))


def pool_enabled(address: str | None, fold_gpus: float) -> bool:
    """Warm actors serve a local single-node Ray with CPU folds only.

    On a cluster a trial's placement-group bundles may lie on other nodes than the pooled
    actors; a GPU actor must be given its GPU by Ray. Both keep the actors inside each
    trial's placement group. ``SERRAY_TUNE_POOL=0`` turns the pool off.
    """
    import os

    import ray

    if os.environ.get("SERRAY_TUNE_POOL", "1") == "0" or address is not None or fold_gpus > 0:
        return False
    return sum(1 for n in ray.nodes() if n.get("Alive")) == 1


def start_pool(
    model: str,
    shared: Any,
    folds: Sequence[Any],
    groups: Sequence[Sequence[int]],
    *,
    n_sets: int,
    normalize: str,
    seed: int,
    device: str,
    threads: int,
    ahead: tuple[Mapping[str, Any], int] | None = None,
) -> FoldPool:
    """Start ``n_sets`` sets of warm fold actors (no CPU asked; the trials' placement groups hold it).

    Args:
        groups: Fold positions each actor of a set hosts (as the trainable groups them,
            :func:`serray.training.actors.fold_groups`).
        ahead: ``(config, epochs)``: set 0 trains the first trial's configuration for
            that many epochs while Tune starts (the fold actor's ``ahead``).
    """
    import ray

    from serray.training.executor import FoldActors

    config, epochs = (dict(ahead[0]), int(ahead[1])) if ahead is not None else (None, 0)
    sets = [FoldActors.warm(model, shared, folds, groups, normalize=normalize, seed=seed, device=device, threads=threads,
                            config=config if k == 0 else None, ahead=epochs if k == 0 else 0).actors
            for k in range(n_sets)]
    log.info("started %d warm set(s) of %d fold actor(s)%s", n_sets, len(groups),
             f"; set 0 trains the first trial's first {ahead[1]} epoch(s) while Tune starts" if ahead else "")
    return FoldPool(ray.remote(num_cpus=0)(_Broker).remote(n_sets), sets)


def ahead_epochs(grace: int, max_t: int, *, resume: bool, time_budget_s: float | None, n_sets: int,
                 first_point: Mapping[str, Any] | None) -> int:
    """Epochs the first trial may train before Tune asks for it: ASHA's grace period (no
    trial stops earlier), and none when the first trial's configuration is not known
    (a resumed search, or no base point) or a time budget could stop it sooner."""
    if resume or time_budget_s is not None or n_sets != 1 or first_point is None:
        return 0
    return max(0, min(int(grace), int(max_t)))
