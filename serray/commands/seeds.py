"""`serray seeds`: one configuration (and variants) x N seeds on every fold."""

from __future__ import annotations

import click

from serray.commands._common import (
    address_option, check_name_option, fail, resources_from_flags, run_options, run_spec_from_options, track_option,
    track_results, track_target,
)


@click.command(name="seeds")
@click.argument("model")
@run_options
@click.option("--n", "n_seeds", default=10, show_default=True, help="Number of seeds.")
@click.option("--seed-start", default=0, show_default=True, help="First seed (seeds are seed-start .. seed-start+n-1).")
@click.option("--variant", "variants", multiple=True, metavar="[NEW=]NAME[:key=v[,key=v]]",
              help="A named config variant trained side by side, e.g. --variant base --variant fc:stages=fc. "
                   "A name the model defines (its paper's arms, e.g. adarl's backbone) starts from its overrides; "
                   "'base' is the configuration as given; any other name needs overrides of its own. "
                   "NEW=ARM:key=v names a new arm that starts from the model's arm ARM, "
                   "e.g. --variant lstm-stl-slow=lstm-stl:lr=5e-4.")
@click.option("--run-prefix", default=None, help="Runs are named PREFIX-VARIANT (default seeds-MODEL-FEATURES-PROTOCOL-LABELS-NORMALIZE-VARIANT-HASH, "
                   "the hash covering the config and the other settings). A run that holds results of other "
                   "settings is refused.")
@address_option
@click.option("--fold-resources", default="cpu=1", show_default=True, metavar="cpu=N,gpu=M,NAME=X", help="Resources of each fold task (NAME=X: a custom Ray resource, e.g. spot=0.01).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--keep-models/--no-keep-models", default=True, show_default=True,
              help="Keep every fold's trained model under W/models/RUN/CONFIG__seedS (for serray predict and export).")
@track_option
def command(model, n_seeds, seed_start, variants, run_prefix, address, fold_resources, device, keep_models, track, **opts) -> None:
    """Train MODEL with N seeds on every fold (in parallel on Ray) and store all predictions.

    Parts already in the predictions store are skipped, so an interrupted command can be
    run again (or given more seeds). A run holds one setting: a run that holds results of
    other settings (config, features, protocol, k, validation rule, corpora, labels,
    normalisation) is refused before any training. Each run's record describes every seed
    it holds. Feed the runs to `serray ensemble`.

    \b
    Example:
      serray seeds mlp --workdir W --config W/tune/tune-mlp-egemaps-loso-native/best.yaml --n 12 --run-prefix mlp
      (runs mlp-base; without --run-prefix, seeds-mlp-egemaps-loso-native-global-base-HASH)
    """
    from serray.models import registry
    from serray.training.seeds import parse_variant, train_seeds

    if n_seeds < 1:
        fail(f"--n must be >= 1 (the number of seeds), got {n_seeds}")
    check_name_option("--run-prefix", run_prefix)
    target = track_target(track, opts["workdir"])
    try:
        run = run_spec_from_options(model, opts)
        spec = registry.get(model)
        var = dict(parse_variant(v, spec) for v in variants) if variants else None
        for variant in var or ():
            check_name_option("--variant", variant)
        resources = resources_from_flags(address=address, fold_resources=fold_resources, device=device)
        res = train_seeds(
            run, seeds=range(seed_start, seed_start + n_seeds), variants=var, run_prefix=run_prefix,
            resources=resources, keep_models=keep_models,
        )
    except (ValueError, LookupError, FileNotFoundError) as exc:
        fail(str(exc))
    t = res.table
    summary = (
        t.groupby(["variant", "split"])[["ua", "wa"]].agg(["mean", "std", "min", "max"]).mul(100).round(1)
    )
    click.echo(f"\nPer-seed UA/WA in % over {t['seed'].nunique()} seeds (pooled over folds):")
    click.echo(summary.to_string())
    fold_avg = t.groupby(["variant", "split"])[["ua_fold", "wa_fold"]].agg(["mean", "std"]).mul(100).round(1)
    click.echo("\nFold-averaged UA/WA in % (each fold scored alone, mean over folds; mean/std over seeds):")
    click.echo(fold_avg.to_string())
    if res.skipped:
        click.echo(f"{len(res.skipped)} (variant, seed) pair(s) were already done and skipped.")
    if run.normalize == "speaker":
        from serray.training.spec import TRANSDUCTIVE_SPEAKER_NORM

        click.echo(f"transductive: {TRANSDUCTIVE_SPEAKER_NORM}")
    for variant, held in res.stored_seeds.items():
        if len(held) > t[t["variant"] == variant]["seed"].nunique():
            click.echo(f"run {res.runs[variant]} holds {len(held)} seeds ({', '.join(map(str, held))}), more than asked: "
                       f"the scores above are the seeds asked for; its record and `ensemble` use all {len(held)}")
    click.echo(f"runs: {', '.join(res.runs.values())}  ({res.seconds:.0f} s)")
    n_members = sum(len(h) for h in res.stored_seeds.values()) or t.groupby(["variant", "seed"]).ngroups
    click.echo(f"next: serray ensemble {run.workdir} --runs {','.join(res.runs.values())} --k 1-{min(5, n_members)}")
    track_results(run.workdir, list(res.runs.values()), target)
