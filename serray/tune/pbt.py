"""Population-based training (``serray tune --scheduler pbt``) over a space's continuous parameters.

Ray's :class:`~ray.tune.schedulers.PopulationBasedTraining` trains ``--num-samples``
trials at once; every ``perturbation_interval`` epochs (the grace period) a trial in the
bottom quarter of the population loads the checkpoint of one in the top quarter
(:mod:`serray.tune.checkpoint`: its folds' weights, optimiser and progress) and goes on
with that trial's hyperparameters perturbed (multiplied by 0.8 or 1.2, or resampled),
clipped to the space's bounds. Only the continuous parameters (``uniform`` and
``loguniform``: learning rate, dropout, weight decay, loss weights) change this way;
the others are fixed at the run's config (``--config``/``--set``) for the whole
population, and the initial population draws the continuous ones at random (PBT takes
no searcher: Optuna is not used).

Example:
    >>> from serray.tune.space import SearchSpace
    >>> sp = SearchSpace.from_dict({"model": "mlp", "params": {
    ...     "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    ...     "batch_size": {"type": "choice", "values": [16, 32]}}})
    >>> space, bounds = pbt_space(sp, {"lr": 1e-3, "batch_size": 32})
    >>> sorted(space), bounds
    (['batch_size', 'lr'], {'lr': (0.0001, 0.01)})
    >>> clip_config({"lr": 0.5, "batch_size": 32}, bounds)
    {'lr': 0.01, 'batch_size': 32}
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Mapping

__all__ = ["CONTINUOUS", "pbt_space", "clip_config", "pbt_scheduler", "pbt_report_at"]

log = logging.getLogger(__name__)

#: The parameter types PBT perturbs.
CONTINUOUS = ("uniform", "loguniform")


def _active(space: Any, values: Mapping[str, Any]) -> list[Any]:
    """The unconditional parameters and the conditional ones whose condition ``values`` meet."""
    params = list(space.params)
    for when, ps in space.conditional:
        if all(values.get(k) in vs for k, vs in when.items()):
            names = {q.name for q in ps}
            params = [p for p in params if p.name not in names] + list(ps)
    return params


def pbt_space(space: Any, base: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """``(param_space, bounds)``: Tune's distributions of the continuous parameters (the
    others at ``base``'s value, or a fixed parameter's value) and each continuous one's
    ``(low, high)``.

    Raises:
        ValueError: The space has no continuous parameter (one line naming the file).
    """
    from ray import tune

    fixed = {p.name: (p.value if p.type == "fixed" else base.get(p.name)) for p in space.params if p.type not in CONTINUOUS}
    out: dict[str, Any] = {}
    bounds: dict[str, tuple[float, float]] = {}
    for p in _active(space, fixed):
        if p.type in CONTINUOUS:
            dist = tune.loguniform if p.type == "loguniform" else tune.uniform
            out[p.name] = dist(float(p.low), float(p.high))
            bounds[p.name] = (float(p.low), float(p.high))
        else:
            out[p.name] = p.value if p.type == "fixed" else base.get(p.name)
    if not bounds:
        raise ValueError(f"{space.source}: --scheduler pbt needs continuous parameters (type uniform or loguniform) "
                         "in the search space, and it has none; use --scheduler asha or another --space")
    return out, bounds


def clip_config(config: dict, bounds: Mapping[str, tuple[float, float]]) -> dict:
    """``config`` with every bounded parameter clipped into its ``(low, high)`` (PBT's
    perturbation multiplies values without looking at the space's bounds)."""
    for name, (low, high) in bounds.items():
        if name in config:
            config[name] = min(max(float(config[name]), low), high)
    return config


def pbt_report_at(interval: int, max_t: int) -> tuple[int, ...]:
    """Where a PBT trial's reports end: every ``interval`` epochs and at ``max_t``.

    Example:
        >>> pbt_report_at(3, 10)
        (3, 6, 9, 10)
    """
    interval = max(1, int(interval))
    return tuple(sorted(set(range(interval, int(max_t) + 1, interval)) | {int(max_t)}))


def pbt_scheduler(metric: str, interval: int, bounds: Mapping[str, tuple[float, float]], param_space: Mapping[str, Any]) -> Any:
    """Ray's PBT on ``metric`` (max), perturbing every ``interval`` epochs the bounded parameters."""
    from ray.tune.schedulers import PopulationBasedTraining

    log.info("PBT: perturbation every %d epoch(s) of %s", interval, ", ".join(bounds))
    return PopulationBasedTraining(
        time_attr="training_iteration", metric=metric, mode="max", perturbation_interval=max(1, int(interval)),
        hyperparam_mutations={k: param_space[k] for k in bounds},
        custom_explore_fn=functools.partial(clip_config, bounds=dict(bounds)),
    )
