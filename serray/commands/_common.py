"""Options and helpers shared by CLI commands: the run options, declared once, and the maps
from flags to the library's objects: :func:`run_spec_from_options` (the run options to a
:class:`~serray.training.spec.RunSpec`, resolved by :func:`serray.training.resolve.resolve_run_spec`)
and :func:`resources_from_flags` (the execution flags to a
:class:`~serray.training.resources.Resources`)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn

import click

from serray.training.resolve import (
    RUN_KEYS, RUN_OPTION_NAMES, parse_assignments, parse_feature_params, parse_value, read_config_file, read_run_defaults,
    resolve_run_spec,
)

if TYPE_CHECKING:
    from serray.training.resources import Resources
    from serray.training.spec import RunSpec

__all__ = [
    "workdir_option", "address_option", "seed_option", "feature_param_option", "run_options", "fail",
    "parse_value", "parse_assignments", "parse_feature_params", "parse_fold_resources", "read_config_file",
    "read_run_defaults", "run_spec_from_options", "RUN_KEYS", "RUN_OPTION_NAMES", "check_name_option",
    "resources_from_flags", "split_names",
]

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
                          "--normalize, --k and the corpora (--corpus, --train-corpus, --test-corpus)."),
        click.option("--preset", default=None, help="Named preset of the model (e.g. small, reduced)."),
        click.option("--domain", default=None, metavar="COLUMN",
                     help="Manifest column whose values are the model's domains (e.g. language for mgnas, gender "
                          "for adarl); the same as --set domain=COLUMN, for models with a domain key."),
        click.option("--corpus", "corpora", multiple=True, help="Use only these corpora's manifests (repeatable; default: best.yaml's, else every manifest)."),
        click.option("--k", default=None, type=int, help="Folds for --protocol kfold (default: best.yaml's, else 5)."),
        click.option("--validation", default=None, type=click.Choice(["coverage", "fraction", "balanced"]),
                     help="Validation speakers per fold: coverage (default) holds out whole speakers until they "
                          "have 15 % of the fold's training utterances and every class (2 speakers per EmoDB "
                          "LOSO fold); balanced does the same, preferring speakers that validated in fewer "
                          "earlier folds, so every speaker validates about equally often; fraction holds out "
                          "15 % of the training speakers (1 per EmoDB LOSO fold; the design before 2026-12)."),
        click.option("--train-corpus", "train_corpora", multiple=True, help="Training corpora for cross-corpus (repeatable; default: best.yaml's)."),
        click.option("--test-corpus", "test_corpora", multiple=True, help="Test corpora for cross-corpus (repeatable; default: best.yaml's)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: The form ``--fold-resources`` takes, as its error lines spell it.
FOLD_RESOURCES_FORM = ("NAME=AMOUNT[,NAME=AMOUNT...], e.g. cpu=1,gpu=0.5,spot=0.01 (NAME: cpu, gpu or a custom Ray "
                       "resource of letters, digits, _ - : .; a custom AMOUNT > 0)")


def _fold_entry(part: str, text: str) -> tuple[str, float]:
    """One ``NAME=AMOUNT`` of ``--fold-resources`` (``cpu``/``gpu`` in lower case), checked.

    Raises:
        ValueError: One line naming the flag, the entry and the expected form.
    """
    from serray.training.resources import RESOURCE_NAME

    key, sep, value = (x.strip() for x in part.partition("="))
    bad = f"--fold-resources {text!r}: bad entry {part.strip()!r}"
    if not sep or not RESOURCE_NAME.fullmatch(key):
        raise ValueError(f"{bad}; expected {FOLD_RESOURCES_FORM}")
    name = key.lower() if key.lower() in ("cpu", "gpu") else key
    if key.lower() in ("cpus", "gpus", "num_cpus", "num_gpus", "memory", "object_store_memory"):
        raise ValueError(f"{bad} (not a custom resource: a fold's CPUs and GPUs are cpu= and gpu=, its memory is "
                         f"not asked for); expected {FOLD_RESOURCES_FORM}")
    try:
        amount = float(value)
    except ValueError:
        amount = math.nan
    if math.isnan(amount) or math.isinf(amount):
        raise ValueError(f"{bad} (the amount must be a number); expected {FOLD_RESOURCES_FORM}")
    if name not in ("cpu", "gpu") and amount <= 0:
        raise ValueError(f"{bad} (a custom resource's amount must be > 0); expected {FOLD_RESOURCES_FORM}")
    return name, amount


def parse_fold_resources(text: str | None) -> dict[str, float]:
    """``"cpu=1,gpu=0.5,spot=0.01"`` -> ``{"cpu": 1.0, "gpu": 0.5, "spot": 0.01}``.

    ``cpu`` and ``gpu`` (any case) are each fold's CPUs and GPUs; any other name is a custom
    Ray resource (:attr:`serray.training.resources.Resources.fold_custom`), e.g.
    ``spot=0.01`` or ``accelerator_type:A10G=0.001``. A missing part is absent (the
    driver's default).

    Raises:
        ValueError: A malformed entry, a non-numeric amount, a custom amount that is not
            > 0, or a name given twice: one line naming the flag, the entry and the form.
    """
    if not text:
        return {}
    res: dict[str, float] = {}
    for part in text.split(","):
        name, amount = _fold_entry(part, text)
        if name in res:
            raise ValueError(f"--fold-resources {text!r}: {name} is given twice; expected {FOLD_RESOURCES_FORM}")
        res[name] = amount
    return res


def resources_from_flags(*, address: str | None = None, fold_resources: str | None = None,
                         folds_per_actor: int | None = None, device: str = "auto", sequential: bool = False,
                         use_ray: bool = False, num_cpus: int | None = None) -> Resources:
    """The one mapping of the execution flags (``--address``, ``--fold-resources``,
    ``--folds-per-actor``, ``--device``, ``--sequential``, ``--ray``, ``--num-cpus``) to a
    :class:`~serray.training.resources.Resources`, checked against this machine before
    anything starts (a joined cluster's nodes are checked once Ray has joined it).

    ``--fold-resources`` names other than ``cpu`` and ``gpu`` become ``fold_custom`` (custom
    Ray resources every fold actor or task asks for); they make the folds train on Ray.
    ``--sequential`` trains in this process: its ``cpu=``/``gpu=`` are not read, and a
    custom resource, which only Ray can honour, is refused.

    Raises:
        ValueError: Bad syntax, both ``--sequential`` and ``--ray``, ``--sequential``
            with a custom resource, a bad value, or more CPUs/GPUs per fold than this
            machine has (for a local Ray).
    """
    from serray.training.resources import Resources

    if sequential and use_ray:
        raise ValueError("--sequential and --ray contradict each other; pass one of them")
    if sequential:
        _refuse_custom_when_sequential(fold_resources)
    request = {} if sequential else parse_fold_resources(fold_resources)
    custom = {k: v for k, v in request.items() if k not in ("cpu", "gpu")}
    res = Resources(address=address, device=device, fold_cpus=request.get("cpu"), fold_gpus=request.get("gpu"),
                    folds_per_actor=folds_per_actor, parallel=True if use_ray else (False if sequential else None),
                    num_cpus=num_cpus, fold_custom=custom)
    res.check()
    return res


def _refuse_custom_when_sequential(text: str | None) -> None:
    """``--sequential`` reads no ``--fold-resources``; a custom resource in it would be ignored: refused."""
    names = [part.partition("=")[0].strip() for part in (text or "").split(",") if part.strip()]
    custom = [n for n in names if n.lower() not in ("cpu", "gpu")]
    if custom:
        raise ValueError(f"--fold-resources {text}: custom Ray resources ({', '.join(custom)}) place folds on Ray "
                         "nodes, but --sequential trains them in this process; drop one of them")


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


def run_spec_from_options(model: str, opts: Mapping[str, Any], seed: int = 0, announce: bool = True) -> RunSpec:
    """The :class:`~serray.training.spec.RunSpec` of a command's run options: the options
    named in :data:`RUN_OPTION_NAMES` handed to the library's one resolution
    (:func:`serray.training.resolve.resolve_run_spec`), its note on a best.yaml's defaults
    printed when ``announce``.

    Raises:
        ValueError, serray.io.CorruptFileError: As :func:`~serray.training.resolve.resolve_run_spec`.
    """
    return resolve_run_spec(model, {k: opts[k] for k in RUN_OPTION_NAMES if k in opts}, seed=seed,
                            announce=click.echo if announce else None)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


track_option = click.option(
    "--track", default=None, metavar="mlflow[:URI]|wandb[:PROJECT]",
    help="When the command ends, also log its results to an experiment tracker: mlflow (a local store in "
         "W/tracking, no server), mlflow:URI, or wandb[:PROJECT] (Weights & Biases offline runs in "
         "W/tracking/wandb, grouped per run; upload with `wandb sync`) (as `serray track`; checked before any "
         "work starts).",
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
        click.echo(f"tracked {t.source}: {t.action} ({t.tracker} run {t.run_id} in {target.uri})")
