"""`serray track`: log runs, searches and ensembles of a work directory to MLflow or W&B."""

from __future__ import annotations

import click

from serray.commands._common import fail


@click.command(name="track")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("--to", "target", default="mlflow", show_default=True, metavar="mlflow[:URI]|wandb[:PROJECT]",
              help="Tracker: mlflow (a local SQLite store in W/tracking, no server needed), mlflow:URI "
                   "(a tracking server, or another store such as sqlite:///path.db), or wandb[:PROJECT] "
                   "(Weights & Biases offline runs in W/tracking/wandb, one group per source; upload them "
                   "with `wandb sync`).")
@click.option("--experiment", default=None, help="MLflow experiment name, or W&B project (default: serray).")
def command(workdir: str, sources: tuple[str, ...], target: str, experiment: str | None) -> None:
    """Log SOURCES to an experiment tracker: RUN (a train or seeds run), tune:EXPERIMENT, ensemble:NAME, report:NAME.

    One MLflow run per source with nested runs per fold (per seed for a seeds run, per trial
    and fold for a search); configuration as params, UA/WA/F1 and per-epoch curves as metrics,
    records and tables as artifacts. With --to wandb the same runs go to W&B, which has no
    nesting: the source is the run group, fold/seed/trial the job type. Sources already
    logged with the same content are left alone; changed ones are replaced.

    \b
    Examples:
      serray track W svm-emodb dcnn-base tune:tune-mlp-egemaps-loso-native
      serray track W ensemble:mlp-val report:comparison --to mlflow:http://tracker:5000
      mlflow ui --backend-store-uri sqlite:///W/tracking/mlflow.db
      serray track W svm-emodb --to wandb:ser-emodb && wandb sync W/tracking/wandb/offline-run-*
    """
    from serray.tracking import parse_target, track

    try:
        tgt = parse_target(target, workdir, experiment)
        done = track(workdir, sources, tgt)
    except ValueError as exc:
        fail(str(exc))
    for t in done:
        click.echo(f"{t.source}: {t.action} ({t.tracker} run {t.run_id})")
    click.echo(f"tracking store: {tgt.uri}")
