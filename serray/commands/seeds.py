"""`serray seeds`: one configuration (and variants) x N seeds on every fold."""

from __future__ import annotations

import click

from serray.commands._common import address_option, fail, feature_param_option, parse_feature_params, workdir_option


@click.command(name="seeds")
@click.argument("model")
@workdir_option
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="YAML of hyperparameters, e.g. best.yaml from serray tune (its features/protocol/labels/normalize are defaults too).")
@click.option("--n", "n_seeds", default=10, show_default=True, help="Number of seeds.")
@click.option("--seed-start", default=0, show_default=True, help="First seed (seeds are seed-start .. seed-start+n-1).")
@click.option("--variant", "variants", multiple=True, metavar="NAME:key=v[,key=v]",
              help="A named config variant trained side by side, e.g. --variant attention:variant=attention --variant backbone:variant=backbone.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a hyperparameter for every variant.")
@click.option("--features", "-f", default=None, help="Feature set (default: best.yaml's, else the model's).")
@feature_param_option
@click.option("--protocol", "-p", default=None, type=click.Choice(["loso", "loso-session", "loco", "kfold", "cross-corpus"]))
@click.option("--labels", default=None)
@click.option("--normalize", default=None, type=click.Choice(["speaker", "global", "none"]))
@click.option("--preset", default=None)
@click.option("--run-prefix", default=None, help="Runs are named PREFIX-VARIANT (default seeds-MODEL-FEATURES-PROTOCOL-LABELS).")
@address_option
@click.option("--fold-resources", default="cpu=1", show_default=True, metavar="cpu=C,gpu=G", help="Resources of each fold task.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--corpus", "corpora", multiple=True, help="Use only these corpora's manifests (repeatable).")
@click.option("--k", default=None, type=int, help="Folds for kfold (default: best.yaml's, else 5).")
@click.option("--train-corpus", "train_corpora", multiple=True, help="Training corpora for cross-corpus (repeatable).")
@click.option("--test-corpus", "test_corpora", multiple=True, help="Test corpora for cross-corpus (repeatable).")
def command(model, workdir, config_path, n_seeds, seed_start, variants, overrides, features, feature_params, protocol, labels, normalize,
            preset, run_prefix, address, fold_resources, device, corpora, k, train_corpora, test_corpora) -> None:
    """Train MODEL with N seeds on every fold (in parallel on Ray) and store all predictions.

    Parts already in the predictions store are skipped, so an interrupted command can be
    run again. Feed the runs to `serray ensemble`.

    \b
    Example:
      serray seeds mlp --workdir W --config W/tune/tune-mlp-egemaps-loso-native/best.yaml --n 12
    """
    import yaml

    from serray import io
    from serray.commands.train import read_run_defaults
    from serray.commands.tune import parse_resources
    from serray.training.seeds import parse_variant, train_seeds

    base: dict = {}
    meta: dict = {}
    if config_path:
        doc = io.read_yaml(config_path) or {}
        if not isinstance(doc, dict):
            fail(f"{config_path}: expected a mapping of hyperparameters (or a 'config:' mapping)")
        if isinstance(doc.get("config"), dict):
            base = dict(doc["config"])
            try:
                meta = read_run_defaults(config_path, model)
            except ValueError as exc:
                fail(str(exc))
        else:
            base = dict(doc)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            fail(f"--set {item!r} must be KEY=VALUE")
        base[key] = yaml.safe_load(value)
    try:
        var = dict(parse_variant(v) for v in variants) if variants else None
        res = train_seeds(
            workdir, model, config=base, seeds=range(seed_start, seed_start + n_seeds), variants=var,
            features=features or meta.get("features"),
            feature_params=parse_feature_params(feature_params) if feature_params else meta.get("feature_params"),
            protocol=protocol or meta.get("protocol", "loso"),
            labels=labels or meta.get("labels", "native"), normalize=normalize or meta.get("normalize", "global"),
            preset=preset, run_prefix=run_prefix, address=address,
            num_cpus=(parse_resources(fold_resources) or {}).get("cpu", 1.0),
            num_gpus=(parse_resources(fold_resources) or {}).get("gpu", 0.0), device=device,
            corpora=list(corpora) or None, k=k or meta.get("k", 5), fold_seed=meta.get("fold_seed", 0), train_corpora=list(train_corpora) or None, test_corpora=list(test_corpora) or None,
        )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    t = res.table
    summary = (
        t.groupby(["variant", "split"])[["ua", "wa"]].agg(["mean", "std", "min", "max"]).mul(100).round(1)
    )
    click.echo(f"\nPer-seed UA/WA in % over {t['seed'].nunique()} seeds (pooled over folds):")
    click.echo(summary.to_string())
    if res.skipped:
        click.echo(f"{len(res.skipped)} (variant, seed) pair(s) were already done and skipped.")
    click.echo(f"runs: {', '.join(res.runs.values())}  ({res.seconds:.0f} s)")
    click.echo(f"next: serray ensemble {workdir} --runs {','.join(res.runs.values())} --k 1-5")
