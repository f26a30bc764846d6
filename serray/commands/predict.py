"""`serray predict`: score audio files with a run's kept fold models or an export."""

from __future__ import annotations

from pathlib import Path

import click

from serray.commands._common import fail


@click.command(name="predict")
@click.argument("model_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="CSV to write (one row per file).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar per feature set.")
def command(model_dir: str, inputs: tuple[str, ...], out: str, progress: bool) -> None:
    """Predict the emotion of audio files with the models in DIR (W/models/RUN or a serray export).

    INPUT is audio files, folders (every audio file under them) or manifests (CSV/Parquet
    with a 'path' column; 'utt_id', 'speaker' and 'domain' are used when present). The
    recorded feature sets are extracted here with the recorded parameters, each member
    normalises as it was trained, the members' logits are summed, and OUT gets per file
    the class probabilities (prob_<class>), the label, whether speaker statistics of the
    scored files were used (transductive), and for files that could not be scored the
    reason (error).

    \b
    Example:
      serray predict W/models/svm-egemaps-loso-native-global-abc-seed0 new_audio/ --out predictions.csv
    """
    from serray import io
    from serray.artifacts import ArtifactError
    from serray.artifacts.predictor import load

    try:
        table = load(model_dir).predict(list(inputs), progress=progress)
    except (ValueError, ArtifactError, LookupError) as exc:
        fail(str(exc))
    io.write_text(table.to_csv(index=False), Path(out))
    bad = int((table["error"] != "").sum())
    click.echo(f"wrote {out}: {len(table) - bad} file(s) predicted" + (f", {bad} not (see its error column)" if bad else ""))
