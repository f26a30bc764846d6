"""`serray demo`: the whole pipeline on the built-in synthetic corpus, with local Ray."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from serray.commands._common import address_option, fail, resources_from_flags
from serray.workdir import Workdir

if TYPE_CHECKING:
    from serray.training.resources import Resources

log = logging.getLogger(__name__)


@click.command(name="demo")
@click.option("--workdir", "-w", default="serray-demo", show_default=True, type=click.Path(file_okay=False),
              help="Work directory for the demo (created).")
@click.option("--model", default="mlp", show_default=True, type=click.Choice(["mlp", "svm", "logreg"]),
              help="Model to tune (utterance-level eGeMAPS features).")
@click.option("--trials", default=8, show_default=True, help="Tuning trials.")
@click.option("--seeds", "n_seeds", default=6, show_default=True, help="Seeds of the best configuration.")
@click.option("--max-k", default=4, show_default=True, help="Largest ensemble size searched.")
@click.option("--seed", default=0, show_default=True, help="Seed of corpus, search and training.")
@address_option
def command(workdir: str, model: str, trials: int, n_seeds: int, max_k: int, seed: int, address: str | None) -> None:
    """Run prepare -> features -> tune -> seeds -> ensemble -> report on a synthetic corpus.

    Two small synthetic "corpora" (16 kHz clean and 8 kHz telephone speech, 16 speakers,
    4 emotions) stand in for real data; evaluation is leave-one-speaker-out, model
    selection uses validation data only. Takes a few minutes on a 2-core laptop.
    """
    from serray.corpora.synth import generate_synthetic_corpus
    from serray.features import extract_features
    from serray.report import write_report

    logging.getLogger("serray").setLevel(min(logging.getLogger().level, logging.INFO))
    t0 = time.perf_counter()
    w = Workdir(workdir)

    def stage(n: int, text: str) -> None:
        click.echo(f"\n[{n}/6] {text}  ({time.perf_counter() - t0:.0f} s)")

    stage(1, f"synthetic corpus -> {w.manifests_dir}")
    m = generate_synthetic_corpus(w.root, seed=seed)
    click.echo(f"{len(m)} utterances, {m['speaker'].nunique()} speakers, corpora {sorted(m['corpus'].unique())}")

    try:
        resources = resources_from_flags(address=address)
        resources.start_ray()  # once, for every stage
    except ValueError as exc:
        fail(str(exc))
    stage(2, "eGeMAPS features on a Ray actor pool")
    rep = extract_features(w.root, ["egemaps"], m, address=resources.address)["egemaps"]
    click.echo(f"{rep.n_extracted} extracted, {rep.n_cached} cached, {rep.n_failed} failed")

    stage(3, f"tune {model}: {trials} trials, Optuna TPE + ASHA, leave-one-speaker-out")
    tuned = _tune(w, model, trials, seed, resources)

    stage(4, f"{n_seeds} seeds of the best configuration (trial {tuned.best['trial_id']})")
    run = _seeds(w, model, tuned.best["config"], seed, n_seeds, resources)

    stage(5, f"ensemble search over the seeds, k = 1..{max_k}, selection on validation")
    ens, ens_dir, single = _ensemble(w, model, run, max_k, resources)

    stage(6, "report")
    report_dir = write_report(w.root, [run])
    click.echo("")
    click.echo(f"tuning   : best validation UA {100 * tuned.best['val_ua']:.1f} % (test {100 * tuned.best['test_ua']:.1f} %)")
    click.echo(f"seeds    : test UA {100 * sum(single) / len(single):.1f} % on average over {len(single)} seeds")
    click.echo(f"ensemble : k={int(ens.best['k'])} selected on validation, test UA {100 * ens.best['test_ua']:.1f} %")
    click.echo(f"note     : {ens.note}")
    _echo_results(w.root, {"leaderboard": Path(tuned.path) / "leaderboard.csv", "best config": tuned.best_yaml,
                           "ensemble": ens_dir, "report": Path(report_dir) / "report.md"})
    click.echo(f"done in {time.perf_counter() - t0:.0f} s")


def _tune(w: Workdir, model: str, trials: int, seed: int, resources: Resources):
    """Stage 3: tune ``model`` leave-one-speaker-out (resuming an earlier demo's search); print its leaderboard."""
    from serray.training.spec import RunSpec
    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    name = f"demo-tune-{model}"
    options = SearchOptions(num_samples=trials, max_epochs=20, name=name, resume=w.tune(name).exists(),
                            resources=resources)
    tuned = tune_model(RunSpec(w.root, model, features="egemaps", protocol="loso", seed=seed), options, verbose=0)
    click.echo(tuned.leaderboard[["trial_id", "val_ua", "test_ua", "epochs", "status"]].round(3).to_string(index=False))
    return tuned


def _seeds(w: Workdir, model: str, config: dict, seed: int, n_seeds: int, resources: Resources) -> str:
    """Stage 4: ``n_seeds`` seeds of ``config``; returns the run holding them."""
    from serray.training.seeds import train_seeds
    from serray.training.spec import RunSpec

    seeds = train_seeds(RunSpec(w.root, model, features="egemaps", protocol="loso", config=config),
                        seeds=range(seed, seed + n_seeds), run_prefix=f"demo-seeds-{model}", resources=resources,
                        progress=True)
    return next(iter(seeds.runs.values()))


def _ensemble(w: Workdir, model: str, run: str, max_k: int, resources: Resources):
    """Stage 5: ensemble search over the run's seeds; returns ``(result, its folder, single members' test UA)``."""
    from serray.commands.ensemble import write_ensemble_folder
    from serray.ensemble import members_from_predictions, run_ensemble_search
    from serray.predictions import read_predictions, run_classes

    members = members_from_predictions(read_predictions(w.root, [run]), run_classes(w.root, run))
    k_max = min(max_k, len(members.names))
    ens = run_ensemble_search(members, range(1, k_max + 1), resources=resources, progress=False)
    ens_dir, single_members, _ = write_ensemble_folder(ens, members, w.ensemble(f"demo-{model}"))
    return ens, ens_dir, single_members["test_ua"].tolist()


def _echo_results(workdir: Path, paths: dict) -> None:
    """List the demo's results, every path absolute (whatever form each stage returned)."""
    click.echo(f"\nresults in {workdir.resolve()}:")
    for label, path in paths.items():
        click.echo(f"  {label:<12} {Path(path).resolve()}")
