"""Options and helpers shared by CLI commands: the run options, declared once, and the
one function that turns them (and a best.yaml's defaults) into a :class:`RunSpec`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn

import click

if TYPE_CHECKING:
    from serray.training.resources import Resources

__all__ = [
    "workdir_option", "address_option", "seed_option", "feature_param_option", "run_options", "fail",
    "parse_value", "parse_assignments", "parse_feature_params", "parse_fold_resources", "read_config_file",
    "read_run_defaults", "run_spec_from_options", "RUN_KEYS", "RUN_OPTION_NAMES", "check_name_option",
    "resources_from_flags", "split_names",
]

#: Keys of ``serray tune``'s best.yaml that ``train``, ``tune`` and ``seeds`` take as
#: defaults (an explicit option wins), so a tuned configuration trains on the data it was
#: tuned on.
RUN_KEYS = ("features", "feature_params", "protocol", "labels", "normalize", "k", "fold_seed", "validation")

workdir_option = click.option(
    "--workdir", "-w", required=True, type=click.Path(file_okay=False), help="Work directory holding manifests, features, runs and results."
)
address_option = click.option(
    "--address", default=None, metavar="auto|HOST:PORT", help="Join a running Ray cluster; default: start local Ray."
)
seed_option = click.option("--seed", default=0, show_default=True, type=int, help="Random seed (recorded in the run record).")
feature_param_option = click.option(
    "--feature-param", "feature_params", multiple=True, metavar="[SET.]KEY=VALUE",
    help="Parameter of a --features set as it was extracted (`serray features --param SET.KEY=VALUE`) or "
         "loaded, e.g. model=/models/hubert-base pooling=frames layer=6 for ssl; with several sets write "
         "SET.KEY=VALUE (repeatable).",
)


def _protocol_choice() -> click.Choice:
    from serray.protocols import PROTOCOLS

    return click.Choice(list(PROTOCOLS))


def run_options(func: Callable) -> Callable:
    """The options every training command shares (data, protocol, config), in one place.

    They arrive as the keyword arguments named in :data:`RUN_OPTION_NAMES`; pass them to
    :func:`run_spec_from_options`.
    """
    options = [
        workdir_option,
        click.option("--features", "-f", default=None, metavar="SET[+SET...]",
                     help="Feature set per model input, joined by + in input order (mfb+egemaps) or by role "
                          "(frames=mfb+groups=egemaps); a model with one expert per feature set (mgnas) takes any "
                          "number, e.g. mfb+mfcc+lld+egemaps, or NAME=SET items; default: --config best.yaml's, "
                          "else the model's."),
        feature_param_option,
        click.option("--protocol", "-p", default=None, type=_protocol_choice(),
                     help="Evaluation protocol (default: --config best.yaml's, else loso)."),
        click.option("--labels", "-l", default=None, help="Label set: native, 4class, valence3 (IEMOCAP), ... (default: best.yaml's, else native)."),
        click.option("--normalize", type=click.Choice(["speaker", "global", "utterance", "none"]), default=None,
                     help="Feature z-normalisation: per speaker (own statistics; transductive), global (training "
                          "statistics; the default unless best.yaml says otherwise), utterance (frames by their "
                          "own utterance's statistics, vectors global; not transductive) or none."),
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Override a hyperparameter (repeatable), e.g. --set lr=5e-4 --set stages=fc."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="YAML of hyperparameters (flat or under 'config:'); --set overrides it. serray tune's "
                          "best.yaml also gives the defaults of --features, --feature-param, --protocol, --labels, "
                          "--normalize, --k."),
        click.option("--preset", default=None, help="Named preset of the model (e.g. small, reduced)."),
        click.option("--domain", default=None, metavar="COLUMN",
                     help="Manifest column whose values are the model's domains (e.g. language for mgnas, gender "
                          "for adarl); the same as --set domain=COLUMN, for models with a domain key."),
        click.option("--corpus", "corpora", multiple=True, help="Use only these corpora's manifests (repeatable)."),
        click.option("--k", default=None, type=int, help="Folds for --protocol kfold (default: best.yaml's, else 5)."),
        click.option("--validation", default=None, type=click.Choice(["coverage", "fraction", "balanced"]),
                     help="Validation speakers per fold: coverage (default) holds out whole speakers until they "
                          "have 15 % of the fold's training utterances and every class (2 speakers per EmoDB "
                          "LOSO fold); balanced does the same, preferring speakers that validated in fewer "
                          "earlier folds, so every speaker validates about equally often; fraction holds out "
                          "15 % of the training speakers (1 per EmoDB LOSO fold; the design before 2026-12)."),
        click.option("--train-corpus", "train_corpora", multiple=True, help="Training corpora for cross-corpus (repeatable)."),
        click.option("--test-corpus", "test_corpora", multiple=True, help="Test corpora for cross-corpus (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


RUN_OPTION_NAMES = (
    "workdir", "features", "feature_params", "protocol", "labels", "normalize", "assignments", "config_file",
    "preset", "corpora", "k", "train_corpora", "test_corpora", "domain", "validation",
)


def parse_value(text: str) -> Any:
    """A command-line value as a YAML scalar (``3`` -> 3, ``[6, 12]`` -> list); plain text if not YAML."""
    import yaml

    try:
        parsed = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    return text if parsed is None and text.strip() not in ("null", "~") else parsed


def parse_assignments(items: tuple[str, ...] | list[str], option: str = "--set") -> dict[str, Any]:
    """``["lr=0.01", "hidden_sizes=[64, 32]"]`` -> ``{"lr": 0.01, "hidden_sizes": [64, 32]}``.

    Values are YAML scalars/lists (``null`` is None, ``true`` a bool, bare words and
    text that is not YAML strings). The one ``KEY=VALUE`` parser of the CLI.

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


def parse_feature_params(items: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """``--feature-param [SET.]KEY=VALUE`` items -> ``{key: value}`` (``None`` when there are none)."""
    try:
        out = parse_assignments(items, "--feature-param")
    except ValueError as exc:
        fail(f"{exc}, e.g. model=/models/hubert-base or ssl.layer=6")
    return out or None


def parse_fold_resources(text: str | None) -> dict[str, float]:
    """``"cpu=1,gpu=0.5"`` -> ``{"cpu": 1.0, "gpu": 0.5}``; a missing part is absent (even share).

    Raises:
        ValueError: Unknown resource names or non-numeric values.
    """
    if not text:
        return {}
    res: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in ("cpu", "gpu"):
            raise ValueError(f"--fold-resources expects cpu=N,gpu=M, got {text!r}")
        try:
            res[key] = float(value)
        except ValueError:
            raise ValueError(f"--fold-resources: {key} must be a number, got {value!r}") from None
    return res


def resources_from_flags(*, address: str | None = None, fold_resources: str | None = None,
                         folds_per_actor: int | None = None, device: str = "auto", sequential: bool = False,
                         use_ray: bool = False, num_cpus: int | None = None) -> Resources:
    """The one mapping of the execution flags (``--address``, ``--fold-resources``,
    ``--folds-per-actor``, ``--device``, ``--sequential``, ``--ray``, ``--num-cpus``) to a
    :class:`~serray.training.resources.Resources`, checked against this machine before
    anything starts (a joined cluster's nodes are checked once Ray has joined it).

    ``--sequential`` trains in this process (``--fold-resources`` does not apply and is
    not read), ``--ray`` on Ray; neither lets the driver decide.

    Raises:
        ValueError: Bad syntax, both ``--sequential`` and ``--ray``, a bad value, or more
            CPUs/GPUs per fold than this machine has (for a local Ray).
    """
    from serray.training.resources import Resources

    if sequential and use_ray:
        raise ValueError("--sequential and --ray contradict each other; pass one of them")
    request = {} if sequential else parse_fold_resources(fold_resources)
    res = Resources(address=address, device=device, fold_cpus=request.get("cpu"), fold_gpus=request.get("gpu"),
                    folds_per_actor=folds_per_actor, parallel=True if use_ray else (False if sequential else None),
                    num_cpus=num_cpus)
    res.check()
    return res


def check_name_option(option: str, value: str | None) -> None:
    """Exit with one line unless ``value`` (of ``option``) is absent or a single safe path
    component (:func:`serray.predictions.check_name`)."""
    from serray.predictions import check_name

    if value is None:
        return
    try:
        check_name(option, value)
    except ValueError as exc:
        fail(str(exc))


def split_names(text: str, option: str) -> list[str]:
    """A comma-separated list of names, stripped and deduplicated (a note names repeats).

    Exits with one line when the list is empty.
    """
    names = [r.strip() for r in (text or "").split(",") if r.strip()]
    if not names:
        fail(f"{option} {text!r} names no run; give comma-separated names, e.g. {option} run-a,run-b")
    unique = list(dict.fromkeys(names))
    if len(unique) < len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        click.echo(f"note: {option} names {', '.join(repeated)} more than once; each is used once", err=True)
    return unique


#: What to do about a config YAML that serray wrote and that is cut short or damaged.
_CONFIG_FIX = "re-create it (`serray tune ... --resume` rewrites best.yaml) or restore an intact copy"


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


def run_spec_from_options(model: str, opts: Mapping[str, Any], seed: int = 0, announce: bool = True) -> Any:
    """The :class:`~serray.training.spec.RunSpec` of a command's run options.

    Merges in one place: the model's defaults, ``--preset``, the ``--config`` file, then
    ``--set``; and for the data options the command line, then a best.yaml's
    :data:`RUN_KEYS`, then the built-in defaults.

    Raises:
        ValueError: Unknown model, bad ``--set``, a best.yaml of another model, or a bad
            protocol/normalisation.
    """
    from serray.models import registry
    from serray.training.spec import RunSpec

    registry.get(model)  # an unknown model fails first, with the registered names
    path = opts.get("config_file")
    config = read_config_file(path) if path else {}
    meta = read_run_defaults(path, model) if path else {}
    config.update(parse_assignments(opts.get("assignments") or ()))
    if opts.get("domain"):
        _set_domain(model, config, str(opts["domain"]))
    taken = {k: v for k, v in meta.items() if not opts.get(k)}
    if announce and taken:
        click.echo(f"defaults from {path}: " + ", ".join(f"{k}={v}" for k, v in taken.items())
                   + " (options given on the command line win)")
    params = parse_feature_params(opts.get("feature_params") or ()) if opts.get("feature_params") else meta.get("feature_params")
    spec = RunSpec(
        workdir=opts["workdir"], model=model,
        features=opts.get("features") or meta.get("features"), feature_params=params,
        protocol=opts.get("protocol") or meta.get("protocol", "loso"),
        labels=opts.get("labels") or meta.get("labels", "native"),
        normalize=opts.get("normalize") or meta.get("normalize", "global"),
        corpora=list(opts.get("corpora") or ()) or None, k=opts["k"] if opts.get("k") is not None else meta.get("k", 5),
        fold_seed=meta.get("fold_seed", 0), validation=opts.get("validation") or meta.get("validation", "coverage"),
        train_corpora=list(opts.get("train_corpora") or ()) or None,
        test_corpora=list(opts.get("test_corpora") or ()) or None, preset=opts.get("preset"), config=config, seed=seed,
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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


track_option = click.option(
    "--track", default=None, metavar="mlflow[:URI]",
    help="When the command ends, also log its results to an experiment tracker: mlflow (a local store in "
         "W/tracking, no server) or mlflow:URI (as `serray track`; checked before any work starts).",
)


def track_target(track: str | None, workdir: str | Path) -> Any:
    """The parsed ``--track`` target (``None`` without one); a bad value or a missing MLflow fails now."""
    if track is None:
        return None
    from serray.tracking import check_available, parse_target

    try:
        target = parse_target(track, workdir)
        check_available(target)
    except ValueError as exc:
        fail(str(exc))
    return target


def track_results(workdir: str | Path, sources: list[str], target: Any) -> None:
    """Log ``sources`` to ``target`` (results are already in the work directory; a failure says so)."""
    if target is None:
        return
    from serray.tracking import track

    try:
        done = track(workdir, sources, target)
    except Exception as exc:  # noqa: BLE001 - the results are stored; tracking them can be retried alone
        fail(f"--track: {exc}; the results are stored in {workdir}: log them later with "
             f"`serray track {workdir} {' '.join(sources)}`")
    for t in done:
        click.echo(f"tracked {t.source}: {t.action} (MLflow run {t.run_id} in {target.uri})")
