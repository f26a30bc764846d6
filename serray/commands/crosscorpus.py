"""`serray crosscorpus`: the train-corpus x test-corpus UA matrix of one model."""

from __future__ import annotations

import logging
from typing import Any

import click

from serray.commands._common import (
    address_option, fail, feature_param_option, resources_from_flags, run_spec_from_options, track_option,
    track_results, track_target, workdir_option,
)
from serray.workdir import Workdir

__all__ = ["command", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> seeds.

    Raises:
        ValueError: Not integers.
    """
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi) + 1) if dash and lo else [int(part)])
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected integers like 0,1,2 or a range 0-4") from None
    if not out:
        raise ValueError(f"--seeds {text!r}: no seed given")
    return sorted(set(out))


@click.command(name="crosscorpus")
@click.argument("model")
@workdir_option
@click.option("--corpora", required=True, metavar="A,B[,C...]", help="Corpora of the matrix (their manifests must be in W).")
@click.option("--leave-one-out", is_flag=True, help="Train on every corpus but one (rows) instead of each corpus alone.")
@click.option("--within", is_flag=True, help="Also fill the diagonal with each corpus's own LOSO result (not with --leave-one-out).")
@click.option("--features", "-f", default=None, metavar="SET[+SET...]", help="Feature set(s) (default: the model's).")
@feature_param_option
@click.option("--labels", "-l", default="4class", show_default=True, help="Label set shared by the corpora.")
@click.option("--normalize", type=click.Choice(["speaker", "global", "utterance", "none"]), default=None,
              help="Feature normalisation (default global: training statistics; speaker is transductive; "
                   "utterance standardises frames per utterance).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a hyperparameter (repeatable).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None, help="YAML of hyperparameters.")
@click.option("--preset", default=None, help="Named preset of the model.")
@click.option("--seeds", "seeds_text", default="0", show_default=True, help="Training seeds: 0,1,2 or 0-4 (the matrix is their mean).")
@click.option("--name", default=None, help="Output folder W/crosscorpus/NAME and run prefix (default crosscorpus-MODEL-LABELS).")
@address_option
@click.option("--fold-resources", default=None, metavar="cpu=N,gpu=M,NAME=X", help="Resources of the fold actor (NAME=X: a custom Ray resource, e.g. spot=0.01).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.option("--sequential", is_flag=True, help="Train in this process (no Ray).")
@track_option
def command(model: str, corpora: str, leave_one_out: bool, within: bool, seeds_text: str, name: str | None, address: str | None,
            fold_resources: str | None, device: str, sequential: bool, track: str | None, **opts: Any) -> None:
    """Train MODEL on each corpus (or every corpus but one) and test on each other corpus.

    Validation speakers are held out inside the training corpora; the test corpora are
    never seen in training. Prints the train x test UA matrix and writes matrix.csv,
    matrix.md, matrix.tex, cells.csv and heatmap.png/.pdf under W/crosscorpus/NAME.

    \b
    Examples:
      serray crosscorpus svm --workdir W --corpora emodb,emovo --labels 4class --within
      serray crosscorpus mlp --workdir W --corpora emodb,emovo,ravdess --leave-one-out --seeds 0-4
    """
    from serray.report.crosscorpus import run_crosscorpus, training_sets, write_crosscorpus

    logging.getLogger("serray").setLevel(min(logging.getLogger().level, logging.INFO))
    target = track_target(track, opts["workdir"])
    try:
        names = [c.strip() for c in corpora.split(",") if c.strip()]
        training_sets(names, leave_one_out)
        if within and leave_one_out:
            raise ValueError("--within fills the diagonal of single-corpus rows; it does not apply with --leave-one-out")
        seeds = parse_seeds(seeds_text)
        base = run_spec_from_options(model, {**opts, "protocol": "cross-corpus"}, seed=seeds[0])
        resources = resources_from_flags(address=address, fold_resources=fold_resources, device=device,
                                         sequential=sequential, use_ray=not sequential)
        prefix = name or f"crosscorpus-{model}-{base.labels}{'-loo' if leave_one_out else ''}"
        result = run_crosscorpus(
            base, names, leave_one_out=leave_one_out, seeds=seeds, within=within, run_prefix=prefix,
            resources=resources,
        )
    except (ValueError, LookupError, FileNotFoundError) as exc:
        fail(str(exc))
    out = write_crosscorpus(result, Workdir(opts["workdir"]).crosscorpus(prefix))
    click.echo((out / "matrix.md").read_text())
    click.echo(f"runs: {', '.join(result.runs)}")
    click.echo(f"written to {out} (matrix.csv, matrix.md, matrix.tex, heatmap.png)")
    track_results(opts["workdir"], list(result.runs), target)
