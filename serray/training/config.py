"""Training configs: the training keys a torch trainer reads, their checks, and the epoch budget.

Also the builder's view of a fold's or run's inputs (:func:`_input_info`), so that a
config is checked against the model built for those inputs before any fold trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from serray.models import registry
from serray.models.contract import InputInfo, parse_stages, stage_epochs
from serray.models.registry import TORCH_TRAINING_DEFAULTS, ModelSpec
from serray.training.augment import AUGMENT_DEFAULTS, check_augment
from serray.training.sampling import CLASS_WEIGHTS, SAMPLERS
from serray.training.wave import wave_tags

if TYPE_CHECKING:
    from serray.training.data import FoldData, TrainingInputs

__all__ = ["TRAINING_DEFAULTS", "check_config", "check_stage_plans", "total_epochs"]

#: Training keys the torch trainer reads (defined in the registry, which validates configs).
TRAINING_DEFAULTS = TORCH_TRAINING_DEFAULTS
_REQUIRED = ("epochs", "batch_size", "lr", "patience")
_OPTIMIZERS = ("sgd", "adam", "adamw")
#: ``early_stop`` rules: keep the epoch with the best validation UA (ties: lower loss) or
#: loss, stopping after ``patience`` epochs without improvement; or ``none``: train every
#: epoch of the budget and keep the last weights, so that the validation logits were not
#: used to choose the epoch (fresh for ensemble selection; see serray.ensemble).
EARLY_STOP_RULES = ("ua", "loss", "none")
_FILLED_WHEN_SET = ("stages", "stage_selection", "refit", "sampler", "class_weight", *AUGMENT_DEFAULTS, "wave_augment")


def _spec(model: ModelSpec | str) -> ModelSpec:
    return registry.get(model) if isinstance(model, str) else model


def _check_kind(spec: ModelSpec, data: FoldData) -> None:
    role = data.primary if data.primary in spec.inputs or spec.variadic else spec.primary
    if not spec.input_spec(role).accepts(data.kind):
        raise ValueError(
            f"model {spec.name!r} takes {spec.input_kind} features but the fold has {data.kind} features; "
            f"use a {spec.input_kind} feature set (default for this model: {', '.join(spec.default_features)})"
        )



def check_config(model: ModelSpec | str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the training keys of a config; return it with training defaults filled in.

    Scikit-learn configs are returned unchanged (their estimator validates them).

    Raises:
        ValueError: A missing required key or a bad optimizer/early_stop/epochs/batch_size.
    """
    spec = _spec(model)
    if spec.backend != "torch":
        return dict(config)
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config of {spec.name!r} lacks training key(s) {missing}")
    # Keys added to the defaults later are filled only when set, so that the config ids
    # (hashes of the filled config) of runs made before them stay the same.
    cfg = {**{k: v for k, v in TRAINING_DEFAULTS.items() if k not in _FILLED_WHEN_SET}, **dict(config)}
    if cfg["optimizer"] not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {cfg['optimizer']!r}")
    if cfg["early_stop"] not in EARLY_STOP_RULES:
        raise ValueError(f"early_stop must be one of {EARLY_STOP_RULES}, got {cfg['early_stop']!r}")
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {cfg['epochs']} and {cfg['batch_size']}")
    if float(cfg["lr"]) <= 0:
        raise ValueError(f"lr must be > 0, got {cfg['lr']}")
    if cfg.get("sampler", "shuffle") not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {cfg['sampler']!r}")
    if cfg.get("class_weight", "none") not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {cfg['class_weight']!r}")
    check_augment(cfg)
    wave_tags(cfg.get("wave_augment"))
    if cfg.get("stage_selection", "all") not in ("all", "last"):
        raise ValueError(f"stage_selection must be 'all' or 'last', got {cfg['stage_selection']!r}")
    parse_stages(str(cfg.get("stages", "all")), None, spec.stage_plans)  # syntax; groups are checked on build
    return cfg


def check_stage_plans(
    model: ModelSpec | str, config: Mapping[str, Any], inputs: TrainingInputs, plans: Sequence[str]
) -> None:
    """Check stage plans against the model's parameter groups before any training starts.

    Builds a torch model once (in this process, on CPU) for the run's input shapes, so a
    value the model's builder refuses (e.g. an unknown architecture) is also found here,
    before Ray starts or a fold trains.

    Raises:
        ValueError: A plan naming an unknown group, listing the model's groups and plans;
            or the builder's error for this config.
    """
    spec = _spec(model)
    todo = sorted({str(p) for p in plans if str(p) != "all"})
    if spec.backend != "torch":
        return
    shapes = {r: tuple(p.sample_shape) for r, p in inputs.packed.items()}
    info = _input_info(shapes, inputs.table.classes, inputs.table.aux_names, {r: p.kind for r, p in inputs.packed.items()},
                       {r: int(p.layers) for r, p in inputs.packed.items() if int(getattr(p, "layers", 1)) > 1})
    try:
        built = spec.build(check_config(spec, config), info)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"model {spec.name!r} cannot be built with this config: {type(exc).__name__}: {exc}") from None
    groups = list(built.parameter_groups())
    for plan in todo:
        parse_stages(plan, groups, spec.stage_plans)


def total_epochs(model: ModelSpec | str, config: Mapping[str, Any]) -> int | None:
    """Epoch budget of a torch config over all its stages (``None`` for scikit-learn).

    Example:
        >>> total_epochs("dcnn", {**registry.get("dcnn").config(), "epochs": 20, "stages": "fc"})
        30
    """
    spec = _spec(model)
    if spec.backend != "torch":
        return None
    cfg = {**TRAINING_DEFAULTS, **dict(config)}
    return stage_epochs(str(cfg["stages"]), int(cfg["epochs"]), spec.stage_plans)


def _input_info(shapes: Mapping[str, tuple[int, ...]], classes: Sequence[str], aux_names: Mapping[str, Sequence[str]],
                kinds: Mapping[str, str] | None = None, layers: Mapping[str, int] | None = None) -> InputInfo:
    """The builder's view of a run or fold: per-role sample shapes and kinds (the first is
    the primary input), stacked SSL layers where known, and the class counts of the
    emotions and every auxiliary label."""
    return InputInfo(
        kinds=dict(kinds or {}),
        layers=dict(layers or {}),
        shape=tuple(next(iter(shapes.values()))),
        n_classes=len(classes),
        n_domains=len(aux_names.get("domain", ())),
        shapes=dict(shapes),
        aux_classes={role: len(names) for role, names in aux_names.items()},
        aux_names={role: tuple(str(n) for n in names) for role, names in aux_names.items()},
    )

