"""Model registry: maps a model name to its family's :class:`ModelSpec`.

Families register themselves: every module ``serray/models/<name>_spec.py`` is imported on
the first lookup (torch-free modules holding the spec and default config), and so is
every entry point of the group ``serray.models`` (families in other packages). No file
lists the families by hand. A spec's builder imports the family's torch or scikit-learn
module only when a model is built (inside fold actors and seed tasks), so lookups stay
cheap. Torch models follow :class:`serray.models.contract.SERModel`.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("dcnn")
    >>> spec.input_kind, spec.default_features, list(spec.inputs)
    ('sequence', ('mfb',), ['x'])
    >>> "mtl_cnn" in registry.names()
    True
"""

from __future__ import annotations

import copy
import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from serray.models.contract import INPUT_KINDS, InputInfo, InputSpec

__all__ = [
    "InputInfo", "InputSpec", "ModelSpec", "TORCH_TRAINING_DEFAULTS", "SKLEARN_TRAINING_DEFAULTS", "Lazy", "register", "get", "names",
]

log = logging.getLogger(__name__)

Backend = Literal["torch", "sklearn"]

#: Training keys the torch fold trainer reads, with the values used when a config lacks
#: them: the one source of training defaults. Every torch model accepts them besides its
#: own keys. ``epochs``, ``batch_size``, ``lr`` and ``patience`` have no default (a torch
#: model's default config must set them). ``stages`` is the frozen-layer choice: a plan
#: name of the spec or text parsed by :func:`serray.models.contract.parse_stages`.
TORCH_TRAINING_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",  # sgd | adam | adamw
    "momentum": 0.0,  # sgd only
    "weight_decay": 0.0,
    "lr_decay": 1.0,  # multiplicative per epoch; 1.0 = constant
    "early_stop": "ua",  # ua | loss (on the validation part) | none (all epochs, the last weights)
    "grad_clip": 0.0,  # max gradient norm; 0 = off
    "max_frames": 0,  # sequence models: random training crop length; 0 = full
    "eval_batch_size": 256,
    "stages": "all",  # one stage training every parameter group
    "stage_selection": "all",  # all: best validation epoch of any stage; last: of the last stage only
    "refit": False,  # retrain on training + validation for the best epoch count; test logits from it
    "sampler": "shuffle",  # shuffle | balanced (each epoch draws every class about equally often)
    "class_weight": "none",  # none | balanced (emotion cross-entropy weighted n / (C * n_c) on the training part)
    # SpecAugment-style masking of training frame inputs (serray.training.augment): masks per sample, max widths
    "time_masks": 0,
    "time_mask_width": 20,
    "freq_masks": 0,
    "freq_mask_width": 8,
    # augmented copies of the training utterances (serray.training.wave): none | aug-<tag>[+aug-<tag>...]
    "wave_augment": "none",
}


#: Training keys the scikit-learn fold trainer reads besides the model's own, with their
#: defaults. ``refit``: after scoring the validation part with a fit on the training part,
#: fit again on training + validation for the test predictions (a fixed configuration
#: selects nothing by validation, so holding those speakers out of its final fit only
#: loses data; the validation logits stay out-of-sample for ensemble and Tune selection).
#: ``wave_augment``: as for torch models (:mod:`serray.training.wave`).
SKLEARN_TRAINING_DEFAULTS: dict[str, Any] = {"refit": True, "wave_augment": "none"}


class Lazy:
    """A builder that imports ``module`` and calls its ``attr`` on first use (picklable by value).

    Example:
        >>> Lazy("serray.models.baselines", "build_mlp")
        serray.models.baselines.build_mlp
    """

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr

    def __call__(self, config: Mapping[str, Any], info: InputInfo) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)(config, info)

    def __repr__(self) -> str:
        return f"{self.module}.{self.attr}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lazy) and (self.module, self.attr) == (other.module, other.attr)

    def __hash__(self) -> int:
        return hash((self.module, self.attr))


_REGISTRY: dict[str, "ModelSpec"] = {}
_loaded = False
#: Entry-point group through which other packages register families.
ENTRY_POINT_GROUP = "serray.models"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family member.

    Attributes:
        name: Registry key, e.g. ``"svm"`` or ``"adarl"``.
        backend: ``"torch"`` (trained epoch by epoch) or ``"sklearn"`` (one fit).
        inputs: Role -> :class:`~serray.models.contract.InputSpec`; the first role is
            the primary input (what one training sample is); the last may be variadic
            (one role per named feature set, see :meth:`input_spec`).
        default_config: Hyperparameters and training settings; every key may be
            overridden with ``--set key=value`` or a search space.
        build: ``build(config, info) -> model`` (a torch module following
            :class:`~serray.models.contract.SERModel`, or a scikit-learn estimator with
            ``predict_proba`` or ``decision_function``).
        description: One line for listings.
        aux_labels: Auxiliary-label role -> manifest column (``"a*b"`` derives one);
            a config key named like the role overrides the column (e.g. ``domain``).
        stage_plans: Named values of the ``stages`` config key (e.g. ``{"finetune_fc":
            "all;all-conv@10*0.1"}``), usable as ``choice`` values in a search space.
        presets: Named partial configs merged over the defaults with ``--preset``.
        variants: Named conditions of a study (e.g. a paper's ablation arms) as config
            overrides: ``serray seeds --variant NAME[:key=value]`` starts from
            ``variants[NAME]`` (when the name is one) and applies its own pairs over it.
        fitted_after_training: The model's ``after_training`` hook changes its predictions
            (e.g. fits a back-end classifier), so the validation logits of its training
            epochs are not those of the model a fold keeps: a search scores a completed
            trial by its finalized validation logits (:mod:`serray.tune.runner`,
            :mod:`serray.tune.nested`). Hooks that only record leave it ``False``.
    """

    name: str
    backend: Backend
    inputs: Mapping[str, InputSpec]
    default_config: Mapping[str, Any]
    build: Callable[[Mapping[str, Any], InputInfo], Any]
    description: str = ""
    aux_labels: Mapping[str, str] = field(default_factory=dict)
    stage_plans: Mapping[str, str] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fitted_after_training: bool = False

    @property
    def primary(self) -> str:
        """Role of the primary input."""
        return next(iter(self.inputs))

    @property
    def input_kind(self) -> str:
        """Kind of the primary input."""
        return self.inputs[self.primary].kind

    @property
    def default_features(self) -> tuple[str, ...]:
        """Default feature set of every input role, in role order (all of a variadic input's)."""
        return tuple(f for i in self.inputs.values() if i.default_features
                     for f in (i.default_features if i.variadic else i.default_features[:1]))

    @property
    def variadic(self) -> str | None:
        """Key of the variadic input (one role per named feature set), ``None`` without one."""
        return next((r for r, i in self.inputs.items() if i.variadic), None)

    def input_spec(self, role: str) -> InputSpec:
        """The :class:`InputSpec` of a run's input role (a variadic input's for any role it made).

        Example:
            >>> get("dcnn").input_spec("x").kind
            'sequence'
        """
        if role in self.inputs and not self.inputs[role].variadic:
            return self.inputs[role]
        if self.variadic is None:
            raise ValueError(f"model {self.name!r} has no input {role!r}; its inputs: {list(self.inputs)}")
        return self.inputs[self.variadic]

    @property
    def domain_column(self) -> str | None:
        """Default column of the ``domain`` auxiliary role (``None`` without one)."""
        return self.aux_labels.get("domain")

    def aux_columns(self, config: Mapping[str, Any]) -> dict[str, str]:
        """Role -> manifest column of every auxiliary label for ``config``.

        A role whose config key is ``None`` or empty is dropped (no such label).
        """
        out = {}
        for role, default in self.aux_labels.items():
            column = config.get(role, default) if self.backend == "torch" else default
            if column:
                out[role] = str(column)
        return out

    def config(self, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return the default config, with a preset and then ``overrides`` merged over it.

        Raises:
            ValueError: Unknown preset, or an override key the model does not have.
        """
        cfg = copy.deepcopy(dict(self.default_config))
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(
                    f"model {self.name!r} has no preset {preset!r}; available: {sorted(self.presets) or 'none'}"
                )
            cfg.update(copy.deepcopy(dict(self.presets[preset])))
        trainer_defaults = TORCH_TRAINING_DEFAULTS if self.backend == "torch" else SKLEARN_TRAINING_DEFAULTS
        known = set(cfg) | set(trainer_defaults)
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ValueError(
                    f"model {self.name!r} has no hyperparameter {key!r}; known keys: {', '.join(sorted(known))}"
                )
            default = cfg[key] if key in cfg else trainer_defaults.get(key)
            _check_type(self.name, key, value, default)
            cfg[key] = value
        return cfg


def _check_type(model: str, key: str, value: Any, default: Any) -> None:
    """Refuse a value whose type cannot stand for the default's (a number given as text, ...).

    Defaults that are ``None`` or text accept anything (e.g. SVM ``gamma``: ``scale`` or 0.1).

    Example:
        >>> _check_type("mlp", "lr", 0.01, 0.001)
        >>> _check_type("mlp", "lr", "abc", 0.001)
        Traceback (most recent call last):
        ...
        ValueError: model 'mlp': hyperparameter 'lr' must be a number (default 0.001), got 'abc'
    """
    if value is None or default is None or isinstance(default, str):
        return
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
        what = "an integer"
    elif isinstance(default, float):
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, (list, tuple)):
        ok, what = isinstance(value, (list, tuple)), "a list, e.g. [256, 128]"
    else:
        return
    if not ok:
        raise ValueError(f"model {model!r}: hyperparameter {key!r} must be {what} (default {default!r}), got {value!r}")


def register(spec: ModelSpec) -> ModelSpec:
    """Register ``spec`` under ``spec.name`` (re-registering the same name replaces it).

    Raises:
        ValueError: Unknown backend, no inputs, or a non-vector input for scikit-learn.
    """
    if spec.backend not in ("torch", "sklearn"):
        raise ValueError(f"backend must be 'torch' or 'sklearn', got {spec.backend!r}")
    if not spec.inputs:
        raise ValueError(f"model {spec.name!r} declares no inputs")
    for role, inp in spec.inputs.items():
        if not isinstance(inp, InputSpec) or inp.kind not in INPUT_KINDS:
            raise ValueError(f"model {spec.name!r}: input {role!r} must be an InputSpec of kind {INPUT_KINDS}")
    flags = [i.variadic for i in spec.inputs.values()]
    if sum(flags) > 1 or (any(flags) and not flags[-1]):
        raise ValueError(f"model {spec.name!r}: at most one variadic input, and it must be the last")
    if spec.backend == "sklearn" and (len(spec.inputs) != 1 or spec.inputs[spec.primary].kinds != ("vector",) or any(flags)):
        raise ValueError(f"scikit-learn model {spec.name!r} must take exactly one vector input")
    _REGISTRY[spec.name] = spec
    return spec


def _family_modules() -> list[str]:
    import serray.models as package

    return sorted(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.name.endswith("_spec"))


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _family_modules():
        importlib.import_module(mod)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:  # noqa: BLE001 - a broken plug-in must not hide the built-in families
            log.exception("model family entry point %s could not be loaded", ep.name)


def get(name: str) -> ModelSpec:
    """Look up a model by name.

    Raises:
        ValueError: Unknown model, listing the registered names.
    """
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(names())}") from None


def names() -> list[str]:
    """Names of all registered models, sorted."""
    _load()
    return sorted(_REGISTRY)
