"""`serray tune`: Ray Tune + Optuna (TPE) + ASHA over a model's search space."""

from __future__ import annotations

import click

from serray.commands._common import (
    address_option, check_name_option, fail, parse_assignments, resources_from_flags, run_options, run_spec_from_options,
    seed_option, track_option, track_results, track_target,
)
from serray.workdir import Workdir


@click.command(name="tune")
@click.argument("model")
@run_options
@click.option("--num-samples", "-n", default=20, show_default=True, type=int, help="Number of trials (>= 1).")
@click.option("--space", default=None, type=click.Path(dir_okay=False), help="Search-space YAML (default: the one installed with serray, serray/search_spaces/MODEL.yaml).")
@seed_option
@click.option("--name", default=None, help="Experiment name (default tune-MODEL-FEATURES-PROTOCOL-LABELS).")
@click.option("--storage", default=None, help="Tune storage path, e.g. s3://bucket/serray (default W/tune).")
@address_option
@click.option("--fold-resources", default=None, metavar="cpu=N,gpu=M,NAME=X", help="Resources of each fold actor; NAME=X asks for a custom Ray resource, e.g. spot=0.01 (default: one trial's folds share the cluster).")
@click.option("--max-concurrent-trials", default=None, type=int)
@click.option("--time-budget", default=None, type=float, help="Stop starting trials after this many seconds.")
@click.option("--grace-period", default=None, type=int,
              help="ASHA: epochs before a trial can be stopped (default: a quarter of the epoch budget, at least 3).")
@click.option("--reduction-factor", default=2, show_default=True, type=int,
              help="ASHA keeps 1/this of the trials at each rung (2 halves them).")
@click.option("--max-epochs", default=None, type=int, help="Epoch cap per trial stage and ASHA max_t (default: the config's epochs).")
@click.option("--max-failures", default=2, show_default=True, help="Retries of a trial whose training raises.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted experiment of the same name, with the same settings (--num-samples "
                   "included; other settings are refused) and only if its Tune state is as serray recorded it.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard event files for every trial (implies --report-every-epoch).")
@click.option("--report-every-epoch", is_flag=True,
              help="Trials report to Tune after every epoch (a row per epoch in Tune's result files). Default: where "
                   "ASHA can act (its rungs, the epoch budget) and every ~10 s; the same trials and results either way.")
@click.option("--objective", default="common-epoch", show_default=True, type=click.Choice(["common-epoch", "fold-best"]),
              help="What ranks the trials: the validation UA pooled over all folds at one common epoch (the best "
                   "of that curve), or with each fold at its own best epoch (fold-best, the design before "
                   "2026-12: optimistic by 2-7 UA points on EmoDB, most for noisy trials).")
@click.option("--nested", is_flag=True,
              help="Nested estimate instead: one search (--num-samples trials) per outer fold on that fold's "
                   "validation speakers only; reports the pooled test UA of the per-fold winners, the honest "
                   "number for a tuned model (folds run as parallel Ray tasks of --fold-resources, default cpu=1).")
@click.option("--scheduler", default="asha", show_default=True, type=click.Choice(["asha", "pbt"]),
              help="asha: Optuna TPE proposes, ASHA stops weak trials early. pbt: population-based training over the "
                   "space's continuous parameters (lr, dropout, loss weights; the others fixed at the config): every "
                   "grace period, weak trials go on from a strong trial's checkpoint with its values perturbed.")
@click.option("--num-checkpoints", default=3, show_default=True, type=int,
              help="Checkpoints kept per trial (saved at ASHA's rungs and at least every 3 minutes; a retried or "
                   "resumed trial goes on from its last one).")
@click.option("--keep-models", default="best", show_default=True, type=click.Choice(["best", "all", "none"]),
              help="Fold models kept under W/models/NAME when the search ends (for serray predict / export): the "
                   "best trial's, every trial's, or none.")
@track_option
def command(model, num_samples, space, seed, name, storage, address, fold_resources, max_concurrent_trials, time_budget,
            grace_period, reduction_factor, max_epochs, max_failures, resume, device, tensorboard, report_every_epoch, objective,
            nested, scheduler, num_checkpoints, keep_models, track, **opts) -> None:
    """Search MODEL's hyperparameters; every trial trains all folds in parallel.

    Optuna's TPE sampler proposes configurations (the model's defaults, with --config and
    --set applied, first), ASHA stops weak trials early (after a grace period of a
    quarter of the epoch budget, at least 3 epochs), and both see only the validation UA
    pooled over all folds' validation utterances at one common epoch (--objective). Test
    UA is stored for every trial but never used for selection. A search space may choose the frozen-layer plan (the `stages` key) like
    any other hyperparameter. --set KEY=VALUE fixes KEY for every trial, even where
    the space searches it (e.g. --set gating=nas); --config only gives the first trial. Writes a leaderboard and best.yaml (usable with
    `serray train MODEL --config best.yaml` and `serray seeds`).

    \b
    Example:
      serray tune mlp --workdir W --features egemaps --protocol loso --num-samples 20
    """
    import logging

    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    logging.getLogger("serray").setLevel(min(logging.getLogger().level, logging.INFO))
    if num_samples < 1:
        fail(f"--num-samples must be >= 1 (the number of trials), got {num_samples}")
    if num_checkpoints < 1:
        fail(f"--num-checkpoints must be >= 1 (checkpoints kept per trial), got {num_checkpoints}")
    check_name_option("--name", name)
    target = track_target(track, opts["workdir"])
    try:
        resources = resources_from_flags(address=address, fold_resources=fold_resources, device=device)
    except ValueError as exc:
        fail(str(exc))
    options = SearchOptions(
        space=space, num_samples=num_samples, name=name, resources=resources,
        grace_period=grace_period, reduction_factor=reduction_factor, max_epochs=max_epochs, resume=resume,
        pinned=tuple(_set_keys(opts)), report_every_epoch=report_every_epoch, scheduler=scheduler,
        num_checkpoints=num_checkpoints, keep_models=keep_models,
    )
    if nested:
        given = [o for o, v in (("--storage", storage), ("--max-concurrent-trials", max_concurrent_trials),
                                ("--time-budget", time_budget), ("--tensorboard", tensorboard),
                                ("--scheduler pbt", scheduler == "pbt")) if v]
        if given:
            fail(f"{', '.join(given)} do(es) not apply to --nested (its folds are Ray tasks writing to W/tune/NAME)")
        return _nested(model, opts, seed, options, target)
    try:
        run = run_spec_from_options(model, opts, seed=seed)
        out = tune_model(
            run, options, storage=storage, max_concurrent_trials=max_concurrent_trials, time_budget_s=time_budget,
            max_failures=max_failures, tensorboard=tensorboard, objective=objective,
        )
    except (ValueError, FileExistsError, FileNotFoundError, LookupError, RuntimeError) as exc:
        fail(str(exc))
    _echo_search(out, model, run, objective)
    if target is not None and Workdir(run.workdir).tune_trials(out.experiment).is_dir():
        track_results(run.workdir, [f"tune:{out.experiment}"], target)
    elif target is not None:
        click.echo(f"--track: the trial records are in {out.path} (--storage), not in the work directory; not tracked")


def _echo_search(out, model: str, run, objective: str) -> None:
    """Print the leaderboard, the best trial and where the search's files are."""
    board = out.leaderboard
    shown = board.copy()
    for col in ("val_ua", "val_ua_fold_best", "test_ua", "test_wa"):
        shown[col] = (100 * shown[col]).round(1)
    shown["seconds"] = shown["seconds"].round(1)
    click.echo(f"\nLeaderboard of {out.experiment} ({len(board)} trials; UA/WA in %, "
               f"selection by val_ua, the validation UA pooled over folds {'at one common epoch' if objective == 'common-epoch' else 'each at its best epoch'}; "
               "val_ua_fold_best: each fold at its own best epoch; test never used):")
    click.echo(shown.to_string(index=False, max_colwidth=30))  # "stopped by ASHA at epoch 27" fits
    n_asha = int(board["status"].str.startswith("stopped by ASHA").sum())
    click.echo(f"\nASHA stopped {n_asha} of {len(board)} trials early.")
    b = out.best
    click.echo(f"best trial {b['trial_id']}: validation UA {100 * b['val_ua']:.1f} %, test UA {100 * b['test_ua']:.1f} % "
               "(non-nested: the choice saw every fold's validation speakers; --nested gives the nested estimate)")
    for note in out.notes:
        click.echo(f"note: {note}")
    click.echo(f"leaderboard: {out.path}/leaderboard.csv")
    click.echo(f"best config: {out.best_yaml}  (serray train {model} --workdir {run.workdir} --config {out.best_yaml})")
    click.echo(f"predictions: run {out.experiment!r} in {Workdir(run.workdir).predictions_dir}; wall time {out.seconds:.0f} s")


def _set_keys(opts: dict) -> list[str]:
    """The keys given by --set (and --domain): fixed for every trial, even where the space searches them."""
    try:
        keys = list(parse_assignments(opts.get("assignments") or ()))
    except ValueError as exc:
        fail(str(exc))
    return keys + (["domain"] if opts.get("domain") else [])


def _nested(model: str, opts: dict, seed: int, options, target) -> None:
    import sys

    from serray.tune.nested import nested_tune

    try:
        run = run_spec_from_options(model, opts, seed=seed)
        out = nested_tune(run, options, command_line=" ".join(sys.argv))
    except (ValueError, FileExistsError, FileNotFoundError, LookupError, RuntimeError) as exc:
        fail(str(exc))
    shown = out.table.copy()
    for col in ("val_ua", "test_ua", "test_wa"):
        shown[col] = (100 * shown[col]).round(1)
    click.echo(f"\nNested search {out.name}: one search per outer fold on its validation speakers (UA/WA in %):")
    click.echo(shown.to_string(index=False, max_colwidth=24))
    click.echo(f"\nnested test UA (pooled over the winners' test predictions): {100 * out.pooled['ua']:.1f} %, "
               f"WA {100 * out.pooled['wa']:.1f} %; fold-averaged UA {100 * out.mean['ua']:.1f} %, WA {100 * out.mean['wa']:.1f} %")
    for note in out.notes:
        click.echo(f"note: {note}")
    click.echo(f"per-fold winners: {out.path}/nested.csv; record: {out.record_path} "
               f"(serray report {run.workdir} --runs {out.name},...); wall time {out.seconds:.0f} s")
    track_results(run.workdir, [out.name], target)
