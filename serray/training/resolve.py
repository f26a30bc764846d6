"""A run's options resolved into its :class:`~serray.training.spec.RunSpec`, in one place.

``serray train``, ``tune``, ``seeds``, ``crosscorpus`` and ``pipeline`` only map their
flags to a mapping of run options (:data:`RUN_OPTION_NAMES`); :func:`resolve_run_spec`
turns it into the run specification. It merges, for the hyperparameters, the model's
defaults, ``preset``, the ``config_file`` (a flat YAML mapping, or one under
``config:`` such as ``serray tune``'s ``best.yaml``), then the ``assignments``
(``KEY=VALUE`` items of ``--set``) and ``domain``; and for the data options the values
given, then a best.yaml's :data:`RUN_KEYS`, then the built-in defaults. Everything a bad
value can get wrong (unknown model or key, a best.yaml of another model, a config file
cut short) fails here with one line, before any data is loaded or Ray starts.

Example:
    >>> spec = resolve_run_spec("svm", {"workdir": "W", "assignments": ["C=0.5"], "k": 3, "protocol": "kfold"})
    >>> spec.config, spec.k, spec.protocol, spec.normalize
    ({'C': 0.5}, 3, 'kfold', 'global')
    >>> parse_assignments(["lr=0.001", "hidden_sizes=[64, 32]", "kernel=rbf"])
    {'lr': 0.001, 'hidden_sizes': [64, 32], 'kernel': 'rbf'}
    >>> parse_assignments(["lr=5e-4", "grid=[1e-3, 2E2]"])
    {'lr': 0.0005, 'grid': [0.001, 200.0]}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from serray.training.spec import RunSpec

__all__ = [
    "RUN_KEYS", "RUN_OPTION_NAMES", "parse_value", "parse_assignments", "parse_feature_params", "read_config_file",
    "read_run_defaults", "resolve_run_spec",
]

#: Keys of ``serray tune``'s best.yaml that ``train``, ``tune`` and ``seeds`` take as
#: defaults (an explicit option wins), so a tuned configuration trains on the data it was
#: tuned on: the corpus selection too (``--corpus``; ``--train-corpus``/``--test-corpus``
#: only where the protocol is still ``cross-corpus``).
RUN_KEYS = ("features", "feature_params", "protocol", "labels", "normalize", "k", "fold_seed", "validation",
            "corpora", "train_corpora", "test_corpora")

#: The run options :func:`resolve_run_spec` reads (the CLI's shared run options).
RUN_OPTION_NAMES = (
    "workdir", "features", "feature_params", "protocol", "labels", "normalize", "assignments", "config_file",
    "preset", "corpora", "k", "train_corpora", "test_corpora", "domain", "validation",
)

#: What to do about a config YAML that serray wrote and that is cut short or damaged.
_CONFIG_FIX = "re-create it (`serray tune ... --resume` rewrites best.yaml) or restore an intact copy"


def parse_value(text: str) -> Any:
    """A command-line value as a YAML scalar (``3`` -> 3, ``5e-4`` -> 0.0005, ``[6, 12]`` ->
    list); plain text if not YAML."""
    import yaml

    from serray import io

    try:
        parsed = io.load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    return text if parsed is None and text.strip() not in ("null", "~") else parsed


def parse_assignments(items: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``["lr=0.01", "hidden_sizes=[64, 32]"]`` -> ``{"lr": 0.01, "hidden_sizes": [64, 32]}``.

    Values are YAML scalars/lists (``null`` is None, ``true`` a bool, bare words and
    text that is not YAML strings). The one ``KEY=VALUE`` parser of serray's options.

    Raises:
        ValueError: An item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_feature_params(items: Sequence[str]) -> dict[str, Any] | None:
    """``--feature-param [SET.]KEY=VALUE`` items -> ``{key: value}`` (``None`` when there are none).

    Raises:
        ValueError: An item that is not ``KEY=VALUE``, with an example.
    """
    try:
        out = parse_assignments(items, "--feature-param")
    except ValueError as exc:
        raise ValueError(f"{exc}, e.g. model=/models/hubert-base or ssl.layer=6") from None
    return out or None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Hyperparameters from a YAML file: a flat mapping, or one under a ``config:`` key
    (an empty file is no hyperparameters).

    Raises:
        ValueError: The file does not hold a mapping.
        serray.io.CorruptFileError: The file is not YAML, or a serray-written one is
            cut short (:func:`serray.io.read_yaml`).
    """
    from serray import io

    data = io.read_yaml(path, _CONFIG_FIX)
    if data is None:
        return {}
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameters (optionally under 'config:')")
    return dict(data)


def read_run_defaults(path: str | Path, model: str) -> dict[str, Any]:
    """The :data:`RUN_KEYS` of a best.yaml (``{}`` for a flat hyperparameter file).

    Raises:
        ValueError: The file was written for another model.
    """
    from serray import io

    data = io.read_yaml(path, _CONFIG_FIX)
    if not (isinstance(data, dict) and isinstance(data.get("config"), dict)):
        return {}
    if data.get("model") not in (None, model):
        raise ValueError(f"{path} is for model {data.get('model')!r}, not {model!r}")
    return {k: data[k] for k in RUN_KEYS if data.get(k) not in (None, {})}


def resolve_run_spec(model: str, options: Mapping[str, Any], *, seed: int = 0,
                     announce: Callable[[str], None] | None = None) -> RunSpec:
    """The :class:`~serray.training.spec.RunSpec` of a command's run options (see the module docstring).

    Args:
        model: Registered model name.
        options: Run options by :data:`RUN_OPTION_NAMES` (``workdir`` required; a
            missing or empty one is not given): ``assignments`` and ``feature_params``
            as ``KEY=VALUE`` items, ``config_file`` a path, ``corpora``/``train_corpora``/
            ``test_corpora`` sequences, the rest values.
        seed: Training seed.
        announce: Called with one line naming the defaults taken from a best.yaml
            (the CLI prints it); ``None`` says nothing.

    Raises:
        ValueError: Unknown model, bad ``--set``/``--feature-param``, a best.yaml of
            another model, a bad protocol/normalisation/k, or an unknown hyperparameter
            key or feature-parameter scope.
        serray.io.CorruptFileError: A config file that is not YAML or is cut short.
    """
    from serray.models import registry
    from serray.training.spec import RunSpec

    registry.get(model)  # an unknown model fails first, with the registered names
    path = options.get("config_file")
    config = read_config_file(path) if path else {}
    meta = read_run_defaults(path, model) if path else {}
    config.update(parse_assignments(options.get("assignments") or ()))
    if options.get("domain"):
        _set_domain(model, config, str(options["domain"]))
    protocol = options.get("protocol") or meta.get("protocol", "loso")
    if protocol != "cross-corpus" or options.get("train_corpora") or options.get("test_corpora"):
        meta = {k: v for k, v in meta.items() if k not in ("train_corpora", "test_corpora")}
    taken = {k: v for k, v in meta.items() if not options.get(k)}
    if announce is not None and taken:
        announce(f"defaults from {path}: " + ", ".join(f"{k}={v}" for k, v in taken.items())
                 + " (options given on the command line win)")
    given = options.get("feature_params")
    spec = RunSpec(
        workdir=options["workdir"], model=model,
        features=options.get("features") or meta.get("features"),
        feature_params=parse_feature_params(given) if given else meta.get("feature_params"),
        protocol=protocol,
        labels=options.get("labels") or meta.get("labels", "native"),
        normalize=options.get("normalize") or meta.get("normalize", "global"),
        corpora=list(options.get("corpora") or meta.get("corpora") or ()) or None,
        k=options["k"] if options.get("k") is not None else meta.get("k", 5),
        fold_seed=meta.get("fold_seed", 0), validation=options.get("validation") or meta.get("validation", "coverage"),
        train_corpora=list(options.get("train_corpora") or meta.get("train_corpora") or ()) or None,
        test_corpora=list(options.get("test_corpora") or meta.get("test_corpora") or ()) or None, preset=options.get("preset"), config=config,
        seed=seed,
    )
    spec.resolved_config()  # unknown hyperparameter keys and feature-parameter scopes fail here, before Ray starts
    for name in spec.feature_sets().values():
        spec.params_for(name)
    return spec


def _set_domain(model: str, config: dict[str, Any], column: str) -> None:
    """``--domain COLUMN``: the config key ``domain`` (a clash with ``--set domain=`` fails).

    Raises:
        ValueError: The model has no ``domain`` key, or ``--set domain=`` says otherwise.
    """
    from serray.models import registry

    spec = registry.get(model)
    if "domain" not in spec.default_config:
        raise ValueError(f"--domain: model {model!r} has no domain; models with one: "
                         + ", ".join(n for n in registry.names() if "domain" in registry.get(n).default_config))
    if config.get("domain") not in (None, column):
        raise ValueError(f"--domain {column} contradicts domain={config['domain']} from --set/--config")
    config["domain"] = column
