"""Options and helpers shared by CLI commands: the run options, declared once, and the maps
from flags to the library's objects: :func:`run_spec_from_options` (the run options to a
:class:`~serray.training.spec.RunSpec`, resolved by :func:`serray.training.resolve.resolve_run_spec`)
and :func:`resources_from_flags` (the execution flags to a
:class:`~serray.training.resources.Resources`)."""

from __future__ import annotations

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
