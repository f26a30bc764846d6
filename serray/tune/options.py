"""What a search is asked to do, and the checked set-up both kinds of search start from.

``serray tune`` (:func:`serray.tune.runner.tune_model`, one search over every fold) and
``serray tune --nested`` (:func:`serray.tune.nested.nested_tune`, one search per outer
fold) take the same :class:`SearchOptions` and start from the same
:func:`prepare_search`: the search space resolved and checked against the model, the
experiment's folds and features loaded, the experiment named, and ASHA's epoch budget
and grace period fixed. Everything a bad space, config or stage plan can get wrong is
found here, before Ray starts.

Example:
    >>> SearchOptions(num_samples=30, max_epochs=12, pinned=("gating",)).grace_period is None
    True
    >>> asha_grace_period(50), asha_grace_period(8), asha_grace_period(1), asha_grace_period(50, 1)
    (13, 3, 1, 1)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from serray.training.resources import Resources

__all__ = ["SCHEDULERS", "KEEP_MODELS", "SearchOptions", "PreparedSearch", "prepare_search", "load_search", "check_search", "resolve_space", "asha_grace_period"]

log = logging.getLogger(__name__)

#: ``serray tune --scheduler``: ASHA (with Optuna TPE) or population-based training.
SCHEDULERS = ("asha", "pbt")
#: ``serray tune --keep-models``: whose fold models a search keeps when it ends.
KEEP_MODELS = ("best", "all", "none")


@dataclass(frozen=True)
class SearchOptions:
    """How a search runs; the same for a plain and a nested search.

    Attributes:
        space: Search-space YAML (default ``serray/search_spaces/<model>.yaml``).
        num_samples: Trials (per outer fold for a nested search).
        name: Experiment name (default ``<kind>-<model>-<features>-<protocol>-<labels>``,
            where ``<features>`` is :func:`serray.training.experiment.feature_tag`).
        resources: Where the trials run (:class:`~serray.training.resources.Resources`):
            cluster ``address`` (default a local Ray), ``device``, ``fold_cpus`` and
            ``fold_gpus`` per fold actor (plain search) or per fold's search task (nested
            search), and for a nested search ``parallel`` (folds as Ray tasks or here).
        grace_period: Epochs before a trial can be stopped (default: a quarter of the
            epoch budget ``max_t``, at least 3; see :func:`asha_grace_period`).
        reduction_factor: Successive halving keeps ``1 / reduction_factor`` of the
            trials at each rung (default 2).
        max_epochs: Epoch cap of every trial's stages and of ASHA's ``max_t`` (default:
            the config's ``epochs``; ``max_t`` covers every searched stage plan).
        resume: Continue the experiment of the same name (a plain search: with the same
            settings, ``num_samples`` included, and its Tune state as serray recorded
            it; :mod:`serray.tune.state`).
        pinned: Config keys fixed at the run config's value for every trial, even where
            the space searches them (``serray tune --set KEY=VALUE``).
        report_every_epoch: Trials report to Tune after every epoch (one row per epoch
            in Tune's result files). Default: at ASHA's rungs, at the epoch budget and
            every ~10 s between (:func:`serray.tune.runner.report_epochs`); the same
            trials, records and predictions either way.
        scheduler: ``"asha"`` (Optuna TPE proposes, ASHA stops early; default) or ``"pbt"``
            (population-based training over the space's continuous parameters,
            :mod:`serray.tune.pbt`; plain searches only).
        num_checkpoints: Checkpoints Tune keeps per trial (:mod:`serray.tune.checkpoint`).
        checkpoint_every_s: A trial saves a checkpoint at ASHA's rungs and at least this
            often (seconds; 0: only at the rungs).
        keep_models: Fold models kept when the search ends (``W/models/<experiment>``, the
            format of ``serray train``): ``"best"`` trial's (default), ``"all"`` trials' or ``"none"``.
    """

    space: str | Path | None = None
    num_samples: int = 20
    name: str | None = None
    resources: Resources = field(default_factory=Resources)
    grace_period: int | None = None
    reduction_factor: int = 2
    max_epochs: int | None = None
    resume: bool = False
    pinned: tuple[str, ...] = ()
    report_every_epoch: bool = False
    scheduler: str = "asha"
    num_checkpoints: int = 3
    checkpoint_every_s: float = 180.0
    keep_models: str = "best"

    def __post_init__(self) -> None:
        """Refuse what no search can run: fewer than one trial, a name that is not one path component.

        Raises:
            ValueError: Naming the option and the fix.
        """
        from serray.predictions import check_name

        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"--num-samples must be an integer >= 1 (the number of trials), got {self.num_samples!r}")
        if self.name is not None:
            check_name("--name", self.name)
        if not isinstance(self.resources, Resources):
            raise ValueError(f"resources must be a serray.training.resources.Resources, got {self.resources!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.keep_models not in KEEP_MODELS:
            raise ValueError(f"--keep-models must be one of {', '.join(KEEP_MODELS)}, got {self.keep_models!r}")
        if isinstance(self.num_checkpoints, bool) or not isinstance(self.num_checkpoints, int) or self.num_checkpoints < 1:
            raise ValueError(f"--num-checkpoints must be an integer >= 1 (checkpoints kept per trial), got {self.num_checkpoints!r}")


@dataclass(frozen=True)
class PreparedSearch:
    """A checked search, ready to run (:func:`prepare_search`)."""

    spec: Any  # the model's registry entry
    space: Any  # serray.tune.space.SearchSpace
    run: Any  # the RunSpec, with the space's preset
    base: dict  # the config the space searches around
    exp: Any  # serray.training.experiment.Experiment: manifest, folds, inputs, classes
    name: str
    max_t: int
    grace: int


def asha_grace_period(max_t: int, grace_period: int | None = None) -> int:
    """The grace period: ``grace_period`` if given, else a quarter of ``max_t``, at least 3 (at most ``max_t``)."""
    grace = grace_period if grace_period is not None else max(3, math.ceil(max_t / 4))
    return max(1, min(int(grace), int(max_t)))


def resolve_space(run: Any, space: str | Path | None, pinned: Sequence[str] = ()) -> tuple[Any, Any, Any, dict]:
    """``(spec, search space, run with the space's preset, base config)``, all checked.

    The space's parameters named in ``pinned`` are fixed at the base config's values
    (:meth:`serray.tune.space.SearchSpace.pin`), and so are those whose ``needs`` keys the
    base config leaves unset (:meth:`~serray.tune.space.SearchSpace.for_config`: e.g.
    mgnas' ``gating`` without ``--domain``), with one log line naming them.

    Raises:
        serray.tune.space.SearchSpaceError: Malformed space, or a space of another model.
        ValueError: A bad config value or a searched key the model does not have.
    """
    from serray.models.registry import SKLEARN_TRAINING_DEFAULTS, TORCH_TRAINING_DEFAULTS
    from serray.training.trainer import check_config
    from serray.tune.space import SearchSpaceError, load_search_space

    spec = run.model_spec()
    sp = load_search_space(space or spec.name)
    if sp.model != spec.name:
        raise SearchSpaceError(f"{sp.source}: file is for model {sp.model!r}, not {spec.name!r}")
    run = run.replace(preset=sp.preset or run.preset)
    base = run.resolved_config()
    check_config(spec, base)
    sp.check_keys({**(TORCH_TRAINING_DEFAULTS if spec.backend == "torch" else SKLEARN_TRAINING_DEFAULTS), **base})
    pins = {k: base[k] for k in pinned if k in sp.names()}
    if pins:
        log.info("not searched, fixed by --set: %s", ", ".join(f"{k}={v}" for k, v in pins.items()))
        sp = sp.pin(pins)
    sp, unmet = sp.for_config(base)
    if unmet:
        log.info("not searched, as the run leaves the key(s) they need unset: %s", "; ".join(
            f"{k}={base.get(k)} (needs {' and '.join(keys)}: --set {keys[0]}=VALUE)" for k, keys in unmet.items()))
    return spec, sp, run, base


def space_plans(sp: Any, base: Mapping[str, Any]) -> list[str]:
    """The stage plans trials can get: the space's ``stages`` values, else the base config's."""
    stages = next((p for p in sp.params if p.name == "stages"), None)
    if stages is None:
        return [str(base.get("stages", "all"))]
    return [str(v) for v in (stages.values if stages.type == "choice" else [stages.value])]


def max_t(sp: Any, spec: Any, base: Mapping[str, Any], max_epochs: int | None) -> int:
    """ASHA's ``max_t``: the largest epoch budget any trial can have over its stages."""
    from serray.models.contract import stage_epochs

    if spec.backend != "torch":
        return 1
    params = {p.name: p for p in sp.params}
    epochs = max_epochs or (params["epochs"].value if "epochs" in params and params["epochs"].type == "fixed" else base.get("epochs", 1))
    return max(1, max(stage_epochs(p, int(epochs or 1), spec.stage_plans) for p in space_plans(sp, base)))


def prepare_search(run: Any, options: SearchOptions, kind: str) -> PreparedSearch:
    """Resolve and check the space, load the experiment, name it ``<kind>-...`` unless named.

    The same as :func:`load_search` then :func:`check_search`.

    Raises:
        serray.tune.space.SearchSpaceError, ValueError: As :func:`resolve_space`, or a
            stage plan the model or the features cannot take.
    """
    prep = load_search(run, options, kind)
    check_search(prep)
    return prep


def load_search(run: Any, options: SearchOptions, kind: str) -> PreparedSearch:
    """:func:`prepare_search` without the model check (:func:`check_search`), which
    builds a torch model once: a caller can start work that needs the loaded experiment
    before it, e.g. warm fold actors that boot while this process imports torch.

    Raises:
        serray.tune.space.SearchSpaceError, ValueError: As :func:`resolve_space`.
    """
    from serray.training.experiment import prepare_experiment

    spec, sp, run, base = resolve_space(run, options.space, options.pinned)
    from serray.training.wave import space_tags

    exp = prepare_experiment(run, base, resources=options.resources, wave_augment=space_tags(sp))
    name = options.name or f"{kind}-{spec.name}-{exp.feature_tag}-{run.protocol}-{run.labels}"
    budget = max_t(sp, spec, base, options.max_epochs)
    return PreparedSearch(spec, sp, run, base, exp, name, budget, asha_grace_period(budget, options.grace_period))


def check_search(prep: PreparedSearch) -> None:
    """Build the model once for the base config and check every stage plan the space can give.

    Raises:
        ValueError: A stage plan the model or the features cannot take, or the model's
            builder refusing the base config.
    """
    from serray.training.trainer import check_stage_plans

    check_stage_plans(prep.spec, prep.base, prep.exp.inputs, space_plans(prep.space, prep.base))
