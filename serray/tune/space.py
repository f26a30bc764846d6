"""Search-space files: ``serray/search_spaces/<model>.yaml`` -> an Optuna define-by-run space.

Format::

    model: mlp                     # must match the model being tuned
    preset: reduced                # optional: preset whose values fill what is not searched
    params:
      lr:          {type: loguniform, low: 1.0e-4, high: 1.0e-2}
      dropout:     {type: uniform, low: 0.0, high: 0.5}
      hidden:      {type: int, low: 32, high: 512, step: 32}     # optional step / log: true
      batch_size:  {type: choice, values: [16, 32, 64]}
      epochs:      {type: fixed, value: 30}
    conditional:                   # optional: params searched only when a choice matches
      - when: {optimizer: [sgd]}
        params:
          momentum: {type: uniform, low: 0.0, high: 0.95}

Any parameter may say ``needs: KEY`` (or a list of keys): it is searched only when the
run's config sets KEY (not null, empty or false), e.g. ``gating: {type: choice, values:
[...], needs: domain}`` searches the gating mode only for a run with ``--domain``; without
KEY the parameter stays at the config's value (:meth:`SearchSpace.for_config`).

Defaults of the model config fill every key the file does not search. A malformed file
fails before any trial starts with :class:`SearchSpaceError`, which names the file, the
key and what is wrong.

Example:
    >>> space = SearchSpace.from_dict({"model": "m", "params": {"lr": {"type": "fixed", "value": 0.1}}}, source="x.yaml")
    >>> space.names()
    ['lr']
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["SearchSpaceError", "Param", "SearchSpace", "load_search_space", "search_space_path", "TYPES"]

TYPES = ("loguniform", "uniform", "int", "choice", "fixed")
_KEYS = {
    "loguniform": {"low", "high"},
    "uniform": {"low", "high"},
    "int": {"low", "high", "step", "log"},
    "choice": {"values"},
    "fixed": {"value"},
}
_REQUIRED = {"loguniform": {"low", "high"}, "uniform": {"low", "high"}, "int": {"low", "high"}, "choice": {"values"}, "fixed": {"value"}}


class SearchSpaceError(ValueError):
    """A malformed search-space file; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) hyperparameter."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    log: bool = False
    values: tuple = ()
    value: Any = None
    needs: tuple[str, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw a value from an Optuna trial (fixed params return their value)."""
        if self.type == "loguniform":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        if self.type == "uniform":
            return trial.suggest_float(self.name, self.low, self.high)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        if self.type == "choice":
            if self.encoded:
                return trial.suggest_categorical(self.name, [json.dumps(v) for v in self.values])
            return trial.suggest_categorical(self.name, list(self.values))
        return self.value

    @property
    def encoded(self) -> bool:
        """Choices that are not scalars (e.g. layer-size lists) travel as JSON strings."""
        return self.type == "choice" and any(not isinstance(v, (str, int, float, bool, type(None))) for v in self.values)

    def contains(self, v: Any) -> bool:
        """Whether ``v`` lies in this parameter's domain."""
        if self.type in ("loguniform", "uniform"):
            return isinstance(v, (int, float)) and self.low <= v <= self.high
        if self.type == "int":
            return isinstance(v, int) and self.low <= v <= self.high and (v - self.low) % (self.step or 1) == 0
        if self.type == "choice":
            return v in self.values
        return v == self.value


def _parse_param(name: str, spec: Any, where: str) -> Param:
    """One parameter, with its ``needs`` (config keys it is searched under)."""
    if isinstance(spec, Mapping) and "needs" in spec:
        needs = spec["needs"] if isinstance(spec["needs"], list) else [spec["needs"]]
        if not needs or not all(isinstance(k, str) and k for k in needs):
            raise SearchSpaceError(f"{where}: {name}: needs must name a config key or a list of them, e.g. needs: domain; "
                                   f"got {spec['needs']!r}")
        p = _parse_distribution(name, {k: v for k, v in spec.items() if k != "needs"}, where)
        return replace(p, needs=tuple(needs))
    return _parse_distribution(name, spec, where)


def _parse_distribution(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{where}: {name}: expected a mapping like {{type: uniform, low: 0, high: 1}}, got {spec!r}")
    t = spec.get("type")
    if t not in TYPES:
        raise SearchSpaceError(f"{where}: {name}: type must be one of {', '.join(TYPES)}, got {t!r}")
    keys = set(spec) - {"type"}
    unknown = keys - _KEYS[t]
    if unknown:
        raise SearchSpaceError(f"{where}: {name}: unknown key(s) {sorted(unknown)} for type {t} "
                               f"(allowed: {sorted(_KEYS[t] | {'needs'})})")
    missing = _REQUIRED[t] - keys
    if missing:
        raise SearchSpaceError(f"{where}: {name}: type {t} needs {sorted(missing)}")
    if t in ("loguniform", "uniform", "int"):
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
            raise SearchSpaceError(f"{where}: {name}: low and high must be finite numbers, got {low!r}, {high!r}")
        if not low < high:
            raise SearchSpaceError(f"{where}: {name}: low ({low}) must be smaller than high ({high})")
        if t == "loguniform" and low <= 0:
            raise SearchSpaceError(f"{where}: {name}: loguniform needs low > 0, got {low}")
        if t == "int":
            if int(low) != low or int(high) != high:
                raise SearchSpaceError(f"{where}: {name}: int bounds must be integers, got {low}, {high}")
            step = spec.get("step", 1)
            if not isinstance(step, int) or step < 1:
                raise SearchSpaceError(f"{where}: {name}: step must be a positive integer, got {step!r}")
            return Param(name, t, int(low), int(high), step=step, log=bool(spec.get("log", False)))
        return Param(name, t, float(low), float(high))
    if t == "choice":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SearchSpaceError(f"{where}: {name}: values must be a non-empty list, got {values!r}")
        return Param(name, t, values=tuple(values))
    return Param(name, t, value=spec["value"])


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space.

    Attributes:
        model: Model name the file is for.
        preset: Optional preset of the model config used as the base.
        params: Unconditional parameters, in file order.
        conditional: ``(when, params)`` pairs: ``when`` maps a choice parameter to the
            values that enable ``params``.
        source: File the space came from (used in messages).
    """

    model: str
    params: tuple[Param, ...]
    conditional: tuple[tuple[dict, tuple[Param, ...]], ...] = ()
    preset: str | None = None
    source: str = "<dict>"
    _names: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "SearchSpace":
        """Parse and validate the YAML structure (see module docstring)."""
        if not isinstance(data, Mapping):
            raise SearchSpaceError(f"{source}: top level must be a mapping with keys model, params")
        unknown = set(data) - {"model", "preset", "params", "conditional"}
        if unknown:
            raise SearchSpaceError(f"{source}: unknown top-level key(s) {sorted(unknown)} (allowed: model, preset, params, conditional)")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise SearchSpaceError(f"{source}: 'model' must name the model, e.g. 'model: mlp'")
        raw = data.get("params")
        if not isinstance(raw, Mapping) or not raw:
            raise SearchSpaceError(f"{source}: 'params' must be a non-empty mapping of parameter name -> distribution")
        params = tuple(_parse_param(k, v, f"{source}: params") for k, v in raw.items())
        seen = {p.name: p for p in params}
        cond = []
        for i, block in enumerate(data.get("conditional") or []):
            where = f"{source}: conditional[{i}]"
            if not isinstance(block, Mapping) or set(block) != {"when", "params"}:
                raise SearchSpaceError(f"{where}: each entry needs exactly 'when' and 'params'")
            when = block["when"]
            if not isinstance(when, Mapping) or not when:
                raise SearchSpaceError(f"{where}: 'when' must map a choice parameter to a list of values")
            for key, vals in when.items():
                parent = seen.get(key)
                if parent is None or parent.type not in ("choice", "fixed"):
                    raise SearchSpaceError(f"{where}: when.{key}: must name a choice parameter defined above")
                vals = vals if isinstance(vals, list) else [vals]
                allowed = parent.values if parent.type == "choice" else (parent.value,)
                bad = [v for v in vals if v not in allowed]
                if bad:
                    raise SearchSpaceError(f"{where}: when.{key}: values {bad} are not among {list(allowed)}")
            sub = block["params"]
            if not isinstance(sub, Mapping) or not sub:
                raise SearchSpaceError(f"{where}: 'params' must be a non-empty mapping")
            cparams = tuple(_parse_param(k, v, f"{where}: params") for k, v in sub.items())
            cond.append(({k: (v if isinstance(v, list) else [v]) for k, v in when.items()}, cparams))
        names = [p.name for p in params] + [p.name for _, ps in cond for p in ps]
        return cls(model, params, tuple(cond), data.get("preset"), source, tuple(dict.fromkeys(names)))

    def names(self) -> list[str]:
        """Every parameter name the space can set."""
        return list(self._names)

    def check_keys(self, config: Mapping[str, Any]) -> None:
        """Every parameter must be a key of the model config.

        Raises:
            SearchSpaceError: A parameter the model does not have.
        """
        bad = [n for n in self.names() if n not in config]
        bad += [f"{p.name} (needs: {k})" for p in self._all() for k in p.needs if k not in config]
        if bad:
            raise SearchSpaceError(
                f"{self.source}: parameter(s) {bad} are not hyperparameters of model {self.model!r}; "
                f"known keys: {', '.join(sorted(config))}"
            )

    def _all(self) -> list[Param]:
        """Every parameter, unconditional then conditional."""
        return list(self.params) + [p for _, ps in self.conditional for p in ps]

    def for_config(self, config: Mapping[str, Any]) -> tuple["SearchSpace", dict[str, list[str]]]:
        """The space for a run of ``config``: parameters whose ``needs`` keys ``config``
        leaves unset (null, empty, false) fixed at ``config``'s values (:meth:`pin`), and
        ``{parameter: its unset keys}`` of those.

        Example:
            >>> sp = SearchSpace.from_dict({"model": "m", "params": {
            ...     "gating": {"type": "choice", "values": ["none", "mmoe"], "needs": "domain"}}})
            >>> fixed, unmet = sp.for_config({"gating": "none", "domain": None})
            >>> unmet, [(p.name, p.type, p.value) for p in fixed.params]
            ({'gating': ['domain']}, [('gating', 'fixed', 'none')])
            >>> sp.for_config({"gating": "none", "domain": "language"})[1]
            {}
        """
        unmet = {p.name: [k for k in p.needs if not config.get(k)] for p in self._all() if p.type != "fixed"}
        unmet = {name: keys for name, keys in unmet.items() if keys}
        if not unmet:
            return self, {}
        return self.pin({name: config.get(name) for name in unmet}), unmet

    def define_by_run(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run function: suggests searched values, returns fixed ones."""
        values: dict[str, Any] = {}
        fixed: dict[str, Any] = {}
        for p in self.params:
            (fixed if p.type == "fixed" else values)[p.name] = p.suggest(trial)
        for when, ps in self.conditional:
            chosen = {**fixed, **values}
            if all(chosen.get(k) in vs for k, vs in when.items()):
                for p in ps:
                    (fixed if p.type == "fixed" else values)[p.name] = p.suggest(trial)
        return fixed

    def point(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The searched part of ``config`` if it lies inside the space, else ``None``.

        Used to evaluate the model's default configuration first, so that the best
        trial is never worse than the defaults on validation data.
        """
        out: dict[str, Any] = {}
        active = list(self.params)
        for when, ps in self.conditional:
            if all(config.get(k) in vs for k, vs in when.items()):
                active = [p for p in active if p.name not in {q.name for q in ps}] + list(ps)
        for p in active:
            if p.type == "fixed":
                continue
            v = config.get(p.name)
            if not p.contains(v):
                return None
            out[p.name] = json.dumps(v) if p.encoded else v
        return out

    def trial_params(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """What the searcher hands the trial that evaluates ``point`` (from :meth:`point`):
        its searched values and the space's fixed ones, as Ray Tune's Optuna searcher
        builds them from :meth:`define_by_run`.
        """
        from optuna.trial import FixedTrial

        trial = FixedTrial(dict(point))
        fixed = self.define_by_run(trial)
        return {**trial.params, **fixed}

    def pin(self, values: Mapping[str, Any]) -> "SearchSpace":
        """The same space with the parameters named in ``values`` fixed at those values.

        ``serray tune --set KEY=VALUE`` pins a searched key this way: every trial gets
        VALUE, and parameters conditional on it are searched only where VALUE enables
        them. Names the space does not search are ignored.

        Example:
            >>> sp = load_search_space("svm").pin({"kernel": "linear"})
            >>> [(p.name, p.type, p.value) for p in sp.params if p.name == "kernel"]
            [('kernel', 'fixed', 'linear')]
        """
        def fix(ps: tuple[Param, ...]) -> tuple[Param, ...]:
            return tuple(Param(p.name, "fixed", value=values[p.name], needs=p.needs) if p.name in values else p for p in ps)

        cond = tuple((when, fix(ps)) for when, ps in self.conditional)
        return SearchSpace(self.model, fix(self.params), cond, self.preset, self.source, self._names)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Turn JSON-encoded choice values (see :attr:`Param.encoded`) back into values."""
        enc = {p.name for p in self.params if p.encoded} | {p.name for _, ps in self.conditional for p in ps if p.encoded}
        return {k: (json.loads(v) if k in enc and isinstance(v, str) else v) for k, v in params.items()}


def search_space_path(model: str) -> Path:
    """``<model>.yaml`` of the spaces installed with serray (``serray/search_spaces/``, in a
    checkout and in a wheel alike), else ``search_spaces/<model>.yaml`` in the cwd (a family
    registered by another package brings its own there, or passes ``--space``).

    Example:
        >>> search_space_path("mlp").parent.name, search_space_path("mlp").parent.parent.name
        ('search_spaces', 'serray')
    """
    here = Path(__file__).resolve().parents[1] / "search_spaces" / f"{model}.yaml"
    if here.exists():
        return here
    return Path.cwd() / "search_spaces" / f"{model}.yaml"


def load_search_space(path_or_model: str | Path) -> SearchSpace:
    """Load a YAML search space from a path, or by model name from ``search_spaces/``.

    Raises:
        SearchSpaceError: Missing file, YAML syntax error, or malformed content.
    """
    import yaml

    from serray import io

    p = Path(path_or_model)
    if p.suffix not in (".yaml", ".yml"):
        p = search_space_path(str(path_or_model))
    if not p.exists():
        raise SearchSpaceError(f"{p}: search-space file not found; write one (see README 'Search spaces') or pass --space PATH")
    try:
        data = io.load_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{p}: not valid YAML: {exc}") from exc
    return SearchSpace.from_dict(data, source=str(p))
