"""Model registry: maps a model name to its family's :class:`ModelSpec`.

The specs are registered by :mod:`serray.models.catalog`, which holds every family's
default config and a builder that imports the family's torch/scikit-learn module only
when a model is built, so looking a model up stays cheap. Adding a family is one module
with a ``build(config, info)`` function plus its entry in the catalogue.

Torch models follow one contract so the fold trainer needs no per-family code:

* ``forward(x) -> dict`` with at least ``"logits"`` (``[B, n_classes]``); families may add
  ``"embedding"``, ``"domain_logits"`` and so on.
* ``loss(out, y, domain) -> Tensor``: the training loss for one mini-batch; ``domain`` is a
  ``LongTensor`` of domain labels or ``None`` when the family does not use a domain.

Example:
    >>> from serray.models import registry
    >>> spec = registry.get("adarl")            # doctest: +SKIP
    >>> model = spec.build(spec.config(), InputInfo(shape=(2, 400, 300), n_classes=4))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

__all__ = ["InputInfo", "ModelSpec", "TORCH_TRAINING_DEFAULTS", "register", "get", "names"]

Backend = Literal["torch", "sklearn"]
InputKind = Literal["vector", "sequence", "segments"]

# Modules that register model families; imported lazily on first lookup.
_FAMILY_MODULES: tuple[str, ...] = ("serray.models.catalog",)

#: Training keys the torch fold trainer reads, with the values used when a config lacks
#: them. Every torch model accepts them besides its own keys. ``epochs``, ``batch_size``,
#: ``lr`` and ``patience`` have no default (a torch model's default config must set them).
TORCH_TRAINING_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",  # sgd | adam | adamw
    "momentum": 0.0,  # sgd only
    "weight_decay": 0.0,
    "lr_decay": 1.0,  # multiplicative per epoch; 1.0 = constant
    "early_stop": "ua",  # ua | loss (on the validation part)
    "grad_clip": 0.0,  # max gradient norm; 0 = off
    "max_frames": 0,  # sequence models: random training crop length; 0 = full
    "eval_batch_size": 256,
}

_REGISTRY: dict[str, "ModelSpec"] = {}
_loaded = False


@dataclass(frozen=True)
class InputInfo:
    """What a model builder needs to know about its input.

    Attributes:
        shape: Shape of one sample without the batch axis: ``(dim,)`` for utterance
            vectors, ``(dim,)`` (per frame) for variable-length sequences, ``(channels,
            freq, time)`` for spectrogram segments.
        n_classes: Number of emotion classes.
        n_domains: Number of domain classes (0 when the model uses no domain).
    """

    shape: tuple[int, ...]
    n_classes: int
    n_domains: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family member.

    Attributes:
        name: Registry key, e.g. ``"svm"`` or ``"adarl"``.
        backend: ``"torch"`` (trained epoch by epoch) or ``"sklearn"`` (one fit).
        input_kind: ``"vector"``, ``"sequence"`` or ``"segments"``.
        default_features: Feature set(s) used when the user names none.
        default_config: Hyperparameters and training settings; every key may be
            overridden with ``--set key=value`` or a search space.
        build: ``build(config, info) -> model`` (a torch ``nn.Module`` following the
            contract above, or a scikit-learn estimator with ``predict_proba`` or
            ``decision_function``).
        description: One line for ``serray train --help`` listings.
        domain_column: Manifest column used as domain label by default (``None`` when
            the model uses no domain); the config key ``domain`` overrides it.
        presets: Named partial configs (e.g. ``{"reduced": {...}}``) merged over the
            defaults with ``--preset``.
    """

    name: str
    backend: Backend
    input_kind: InputKind
    default_features: tuple[str, ...]
    default_config: Mapping[str, Any]
    build: Callable[[Mapping[str, Any], InputInfo], Any]
    description: str = ""
    domain_column: str | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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
        known = set(cfg) | (set(TORCH_TRAINING_DEFAULTS) if self.backend == "torch" else set())
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ValueError(
                    f"model {self.name!r} has no hyperparameter {key!r}; known keys: {', '.join(sorted(known))}"
                )
            cfg[key] = value
        return cfg


def register(spec: ModelSpec) -> ModelSpec:
    """Register ``spec`` under ``spec.name`` (re-registering the same name replaces it)."""
    if spec.backend not in ("torch", "sklearn"):
        raise ValueError(f"backend must be 'torch' or 'sklearn', got {spec.backend!r}")
    if spec.input_kind not in ("vector", "sequence", "segments"):
        raise ValueError(f"input_kind must be vector, sequence or segments, got {spec.input_kind!r}")
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a family not written yet
            if exc.name != mod:
                raise
    _loaded = True


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
