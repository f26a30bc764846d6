"""`serray predict`: score audio files with a run's kept fold models or an export."""

from __future__ import annotations

from pathlib import Path

import click

from serray.commands._common import fail


def _ssl_models(items: tuple[str, ...]) -> str | dict[str, str] | None:
    """``--ssl-model`` values: one ``FOLDER`` (the one recorded model), or ``RECORDED=FOLDER`` items."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    bad = [i for i in items if "=" not in i]
    if bad:
        fail(f"--ssl-model {bad[0]!r}: with several --ssl-model give each as RECORDED=FOLDER")
    return dict(i.split("=", 1) for i in items)


@click.command(name="predict")
@click.argument("model_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="CSV to write (one row per file).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar per feature set.")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Extract on the Ray actors of a running cluster; default: no Ray for small inputs (see --ray).")
@click.option("--ray/--no-ray", "use_ray", default=None,
              help="Force Ray actors on a local Ray (--ray) or never start Ray (--no-ray); default: this process for "
                   "at most 100 files, else the pool `serray features` picks (a local process pool, Ray above 5000 files).")
@click.option("--num-actors", type=int, default=None, help="Extraction workers (default: one per free CPU); 0 extracts in this process.")
@click.option("--gpus-per-actor", type=float, default=0.0, show_default=True, help="GPUs each Ray actor reserves (ssl on GPU).")
@click.option("--ssl-model", "ssl_models", multiple=True, metavar="[RECORDED=]FOLDER",
              help="Where a recorded ssl model folder lives now (the same weights); FOLDER alone when the models record one.")
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="onnx: score with the model.onnx graphs of `serray export --onnx` in onnxruntime (every member needs one).")
def command(model_dir: str, inputs: tuple[str, ...], out: str, progress: bool, address: str | None, use_ray: bool | None,
            num_actors: int | None, gpus_per_actor: float, ssl_models: tuple[str, ...], runtime: str) -> None:
    """Predict the emotion of audio files with the models in DIR (W/models/RUN or a serray export).

    INPUT is audio files, folders (every audio file under them) or manifests (CSV/Parquet
    with a 'path' column; 'utt_id', 'speaker' and 'domain' are used when present). The
    recorded feature sets are extracted with the recorded parameters (ssl: the recorded
    model folder and layer), each member normalises as it was trained, the members'
    logits are summed, and OUT gets per file the class probabilities (prob_<class>), the
    label, whether speaker statistics of the scored files were used (transductive), and
    for files that could not be scored the reason (error).

    Small inputs are extracted in this process; larger ones on the feature pool of
    `serray features` (--address joins a Ray cluster, whose nodes must see the audio
    paths; --ray starts a local Ray). The predictions are the same wherever they run.

    \b
    Examples:
      serray predict W/models/svm-egemaps-loso-native-global-abc-seed0 new_audio/ --out predictions.csv
      serray predict export/ big_corpus.csv --out p.csv --address auto
      serray predict export/ clips/ --out p.csv --ssl-model /old/models/hubert-base=/models/hubert-base
      serray predict dcnn-export/ clips/ --out p.csv --runtime onnx
    """
    from serray import io
    from serray.artifacts import ArtifactError
    from serray.artifacts.predictor import load

    try:
        table = load(model_dir, runtime=runtime).predict(list(inputs), progress=progress, address=address, use_ray=use_ray,
                                        num_actors=num_actors, gpus_per_actor=gpus_per_actor,
                                        ssl_models=_ssl_models(ssl_models))
    except (ValueError, ArtifactError, LookupError) as exc:
        fail(str(exc))
    io.write_text(table.to_csv(index=False), Path(out))
    bad = int((table["error"] != "").sum())
    click.echo(f"wrote {out}: {len(table) - bad} file(s) predicted" + (f", {bad} not (see its error column)" if bad else ""))
