"""`serray export`: a self-contained folder of a run's or an ensemble's kept fold models (or of
those members retrained on all training data, `--refit all-data`)."""

from __future__ import annotations

import click

from serray.commands._common import fail


@click.command(name="export")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.option("--runs", "source", required=True, metavar="RUN|ensemble:NAME[:k=K]",
              help="A run (all its kept fold models) or an ensemble search's validation-selected subset "
                   "(of size K; default the search's best).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="New folder to write.")
@click.option("--refit", "refit", type=click.Choice(["none", "all-data"]), default="none", show_default=True,
              help="none: export the kept fold models; all-data: retrain each member (config and seed) once on all "
                   "the run's training data (every fold's training and validation parts) for the median of its folds' "
                   "best epochs (per stage of a multi-stage plan), and export those models.")
@click.option("--onnx", is_flag=True, help="Also write model.onnx next to each torch member's weights (needs "
              "pip install 'serray[onnx]'); members that cannot be exported are listed with the reason.")
def command(workdir: str, source: str, out: str, refit: str, onnx: bool) -> None:
    """Export kept fold models of WORKDIR with their fusion rule, a model card and checksums.

    The folder holds the members (kept fold models: safetensors weights, npz arrays,
    model.json), export.json (members, fusion = sum of logits, sha256 of every file) and
    README.md (data, protocol, label set, the test estimate and how it was selected,
    what is transductive, library versions). `serray predict OUT AUDIO...` and
    `serray.load(OUT)` read it without the work directory. With --onnx every torch
    member also gets model.onnx (utterance logits of normalised inputs) and onnx.json
    (its inputs, their normalisation, the class order); members without a graph are
    listed with the reason in export.json and the model card.

    With --refit all-data each member is instead retrained, with its recorded config and
    seed, on every training utterance of its run (for cross-corpus runs: the training
    corpora only), in this process, and the folder holds one model per config and seed
    (members/<run>/<config>__seed<s>/refit/); a multi-stage plan trains each stage for
    the median of the epochs it handed on in the folds; a search's kept trials (--runs
    EXPERIMENT) refit from the search's recorded settings. The model card's test estimate is then the
    cross-validation estimate of the training procedure, not a measurement of the refit
    models.

    \b
    Example:
      serray export W --runs ensemble:mlp10:k=5 --out mlp10-export
      serray export W --runs svm-emodb --refit all-data --out svm-final
    """
    from serray.artifacts.export import export_models

    try:
        path = export_models(workdir, source, out, refit=refit, onnx=onnx, progress=click.echo)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        fail(str(exc))
    click.echo(f"exported {source} to {path} (model card: {path / 'README.md'})")
