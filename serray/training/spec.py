"""The run specification: what data and which model configuration a run trains, in one object.

``serray train``, ``tune`` and ``seeds`` build one :class:`RunSpec` from their options
(:meth:`RunSpec.from_options`, i.e. :func:`serray.training.resolve.resolve_run_spec`,
which merges a config file, a best.yaml's defaults, ``--set`` and the model's defaults in
one place) and hand it to :func:`serray.training.run.train_run`,
:func:`serray.training.seeds.train_seeds` and :func:`serray.tune.runner.tune_model`.
Execution settings (device, fold resources, Ray address) travel separately, as one
:class:`~serray.training.resources.Resources`: they do not change the numbers.

Features: ``features`` names one feature set per input role of the model, joined by
``+`` in role order (``mfb+egemaps``) or by role (``frames=mfb+groups=egemaps``); roles
left out take the model's default set. A model with a variadic input takes any number of
sets there, one role each (``mfb+mfcc+lld+egemaps``: four experts of mgnas). ``feature_params`` are extraction/load parameters:
``KEY`` applies to the only set (or to every set when it is the model's single input),
``SET.KEY`` to one set.

Example:
    >>> spec = RunSpec("W", "dcnn", config={"lr": 5e-4})
    >>> spec.feature_sets()
    {'x': 'mfb'}
    >>> spec.resolved_config()["lr"]
    0.0005
    >>> spec.replace(seed=3).seed
    3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["RunSpec", "parse_feature_sets", "TRANSDUCTIVE_SPEAKER_NORM"]

#: Why ``--normalize speaker`` is transductive; stored in every record that uses it.
TRANSDUCTIVE_SPEAKER_NORM = (
    "normalize=speaker uses unlabelled test-speaker features (each test speaker is standardised "
    "with its own statistics): standard in SER, but transductive"
)


def _split_items(text: str, fixed: list[str], variadic: str | None, model: str) -> list[tuple[str, str]]:
    """``(role, set)`` of every ``+``-item: ``ROLE=SET``, or a set by position (fixed
    roles in order, then the variadic input's roles, named after their sets)."""
    items = [t.strip() for t in str(text).split("+") if t.strip()]
    if variadic is None and len(items) > len(fixed):
        raise ValueError(f"--features {text!r} names {len(items)} sets but model {model!r} takes {len(fixed)} input(s): {fixed}")
    out = []
    for pos, item in enumerate(items):
        role, eq, name = item.partition("=")
        role, name = (role.strip(), name.strip()) if eq else (fixed[pos] if pos < len(fixed) else item, item)
        if not role or not name:
            raise ValueError(f"--features {text!r}: {item!r} needs a feature set and, with '=', a role name")
        if role not in fixed and variadic is None:
            raise ValueError(f"--features {text!r}: model {model!r} has no input {role!r}; its inputs: {fixed}")
        out.append((role, name))
    return out


def parse_feature_sets(text: str | None, inputs: Mapping[str, Any], model: str = "") -> dict[str, str]:
    """Role -> feature set for ``text`` (see the module docstring); defaults fill the rest.

    A variadic input (:attr:`serray.models.contract.InputSpec.variadic`) takes every set
    after the fixed roles' ones, one role each, named after the set (``mfb+egemaps`` ->
    ``{"mfb": "mfb", "egemaps": "egemaps"}``) or ``NAME=SET``; without any, its defaults.

    Raises:
        ValueError: More sets than inputs, an unknown role, a role named twice, or a role
            without a set.

    Example:
        >>> from serray.models.contract import InputSpec
        >>> parse_feature_sets("ssl", {"x": InputSpec("vector", ("egemaps",))})
        {'x': 'ssl'}
        >>> many = {"experts": InputSpec("sequence", ("mfb", "egemaps"), other_kinds=("vector",), variadic=True)}
        >>> parse_feature_sets(None, many), parse_feature_sets("lld+a=mfb", many)
        ({'mfb': 'mfb', 'egemaps': 'egemaps'}, {'lld': 'lld', 'a': 'mfb'})
    """
    fixed = [r for r, i in inputs.items() if not getattr(i, "variadic", False)]
    variadic = next((r for r, i in inputs.items() if getattr(i, "variadic", False)), None)
    out = {r: inputs[r].default_features[0] for r in fixed if inputs[r].default_features}
    extra: dict[str, str] = {}
    for role, name in _split_items(text, fixed, variadic, model) if text else []:
        if role in fixed:
            out[role] = name
            continue
        if role in extra:
            raise ValueError(f"--features {text!r} names input {role!r} twice; give the roles names, e.g. a={name}+b={name}")
        extra[role] = name
    if variadic is not None and not extra:
        extra = {f: f for f in inputs[variadic].default_features}
    missing = [r for r in fixed if r not in out]
    if missing:
        if not text:
            raise ValueError(f"model {model!r} has no default feature set for input(s) {missing}; pass --features")
        raise ValueError(f"--features {text!r} leaves input(s) {missing} of model {model!r} without a feature set")
    return {**{r: out[r] for r in fixed}, **extra}


@dataclass(frozen=True)
class RunSpec:
    """One run's data and model configuration (see the module docstring).

    Attributes:
        workdir: Work directory (manifests, feature cache, results).
        model: Registered model name.
        features: Feature set(s), ``None`` for the model's defaults.
        feature_params: Extraction/load parameters (``KEY`` or ``SET.KEY`` -> value).
        protocol: One of :data:`serray.protocols.PROTOCOLS`.
        labels: Label set (``native``, ``4class``, ...).
        normalize: ``"speaker"``, ``"global"`` or ``"none"``.
        corpora: Restrict to these corpora's manifests.
        k: Folds for ``kfold``.
        fold_seed: Seed of fold assignment and validation choice.
        validation: How each fold's validation speakers are chosen, one of
            :data:`serray.protocols.VALIDATION_RULES` (``coverage``: 15 % of the training
            utterances and every class; ``balanced``: the same, every speaker validating
            about equally often across folds; ``fraction``: 15 % of the training
            speakers, the earlier design).
        train_corpora, test_corpora: For ``cross-corpus``.
        preset: Named preset of the model, merged before ``config``.
        config: Hyperparameters over the model's defaults (a file, then ``--set``).
        seed: Training seed.
    """

    workdir: str
    model: str
    features: str | None = None
    feature_params: Mapping[str, Any] | None = None
    protocol: str = "loso"
    labels: str = "native"
    normalize: str = "global"
    corpora: Sequence[str] | None = None
    k: int = 5
    fold_seed: int = 0
    validation: str = "coverage"
    train_corpora: Sequence[str] | None = None
    test_corpora: Sequence[str] | None = None
    preset: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        from serray.protocols import PROTOCOLS, VALIDATION_RULES
        from serray.training.data import NORMALIZATIONS

        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; use one of {PROTOCOLS}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.validation not in VALIDATION_RULES:
            raise ValueError(f"unknown validation rule {self.validation!r}; use one of {VALIDATION_RULES}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"--k must be an integer >= 2 (folds of --protocol kfold), got {self.k!r}")
        object.__setattr__(self, "workdir", str(self.workdir))
        for name in ("corpora", "train_corpora", "test_corpora"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if value else None)

    @classmethod
    def from_options(cls, model: str, options: Mapping[str, Any], *, seed: int = 0,
                     announce: Callable[[str], None] | None = None) -> "RunSpec":
        """The run specification of a command's run options, a config file and ``--set``
        items (:func:`serray.training.resolve.resolve_run_spec`, which documents the merge).

        Example:
            >>> RunSpec.from_options("svm", {"workdir": "W", "assignments": ["C=2"]}).config
            {'C': 2}

        Raises:
            ValueError, serray.io.CorruptFileError: As :func:`~serray.training.resolve.resolve_run_spec`.
        """
        from serray.training.resolve import resolve_run_spec

        return resolve_run_spec(model, options, seed=seed, announce=announce)

    def model_spec(self) -> Any:
        """The model's registry entry (raises ``ValueError`` for an unknown model)."""
        from serray.models import registry

        return registry.get(self.model)

    def resolved_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults, then the preset, then :attr:`config`, then ``overrides``: the one config resolution."""
        return self.model_spec().config(preset=self.preset, overrides={**dict(self.config), **dict(overrides or {})})

    def feature_sets(self) -> dict[str, str]:
        """Input role -> feature set name."""
        spec = self.model_spec()
        return parse_feature_sets(self.features, spec.inputs, spec.name)

    def params_for(self, feature_set: str) -> dict[str, Any] | None:
        """The feature parameters of one set (``None`` when it has none).

        Raises:
            ValueError: An unscoped ``KEY`` while the model reads several feature sets.
        """
        params = dict(self.feature_params or {})
        sets = list(self.feature_sets().values())
        out = {}
        for key, value in params.items():
            scope, dot, name = key.partition(".")
            if dot:
                if scope not in sets:
                    raise ValueError(f"--feature-param {key}: {scope!r} is not one of this run's feature sets {sets}")
                if scope == feature_set:
                    out[name] = value
            elif len(set(sets)) > 1:
                raise ValueError(f"--feature-param {key}: the run reads several feature sets {sets}; write SET.{key}")
            else:
                out[key] = value
        return out or None

    def features_text(self) -> str:
        """The feature sets as ``--features`` text that parses back to the same roles
        (a variadic input's role named otherwise than its set as ``ROLE=SET``).

        Example:
            >>> RunSpec("W", "mgnas", features="mfb+vec=egemaps").features_text()
            'mfb+vec=egemaps'
        """
        spec = self.model_spec()
        return "+".join(name if role == name or not spec.input_spec(role).variadic else f"{role}={name}"
                        for role, name in self.feature_sets().items())

    def corpus_selection(self) -> dict[str, list[str]]:
        """The corpora the run was restricted to, for best.yaml (``{}`` when it used every manifest).

        Example:
            >>> RunSpec("W", "svm", corpora=["emodb"]).corpus_selection()
            {'corpora': ['emodb']}
        """
        names = ("corpora", "train_corpora", "test_corpora")
        return {n: list(getattr(self, n)) for n in names if getattr(self, n)}

    def replace(self, **changes: Any) -> "RunSpec":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The fields that go into run records and best.yaml (without ``workdir``/``config``)."""
        return {
            "features": self.features_text(),
            "feature_params": dict(self.feature_params or {}),
            "protocol": self.protocol,
            "labels": self.labels,
            "normalize": self.normalize,
            "k": self.k,
            "fold_seed": self.fold_seed,
            "validation": self.validation,
            **({"transductive": True, "transductive_reason": TRANSDUCTIVE_SPEAKER_NORM} if self.normalize == "speaker" else {}),
        }
