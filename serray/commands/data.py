"""`serray data`: prepare corpus manifests, inspect them, generate the synthetic corpus."""

from __future__ import annotations

import logging

import click

from serray.commands._common import fail
from serray.workdir import Workdir

log = logging.getLogger(__name__)

_ADAPTERS = ("emodb", "emovo", "ravdess", "iemocap", "cremad", "tess", "cafe", "msppodcast", "table", "audformat")


@click.group(name="data")
def command() -> None:
    """Corpus manifests: prepare, info, synth."""


@command.command("prepare")
@click.argument("corpus", type=click.Choice(_ADAPTERS))
@click.argument("root", type=click.Path())
@click.option("--workdir", "-w", required=True, type=click.Path(file_okay=False), help="Work directory; the manifest goes to W/manifests/<name>.parquet.")
@click.option("--name", default=None, help="Manifest/corpus name (default: the adapter name).")
@click.option("--no-check", is_flag=True, help="Read file headers only instead of decoding every file.")
@click.option("--exclude-out-of-range", is_flag=True,
              help="Exclude float files with samples beyond full scale (peak > 1.0); by default they are kept, "
                   "listed in W/manifests/NAME.bad.csv with excluded=False and a warning.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE", help="Adapter option, e.g. -o corpus=mycorpus for 'table', -o table=emotion "
                   "-o emotion_column=COL for 'audformat'.")
def prepare(corpus: str, root: str, workdir: str, name: str | None, no_check: bool, exclude_out_of_range: bool,
            options: tuple[str, ...]) -> None:
    """Scan a corpus folder (or table file, for 'table') and write its manifest.

    Every audio file is checked; unusable files are listed in W/manifests/<name>.bad.csv
    and excluded, never silently dropped.

    \b
    Examples:
      serray data prepare emodb ../shared/data/emodb/wav --workdir W
      serray data prepare emovo ../shared/data/emovo --workdir W
      serray data prepare table my_corpus.csv -o corpus=mine --workdir W
      serray data prepare audformat ~/audb/emodb/1.4.1 -o table=emotion --workdir W
    """
    from serray.corpora import CorpusLayoutError, prepare_corpus
    from serray.corpora.info import summary_table
    from serray.manifest import ManifestError

    opts = {}
    for item in options:
        if "=" not in item:
            fail(f"--option {item!r} must be KEY=VALUE")
        k, v = item.split("=", 1)
        opts[k] = v
    try:
        res = prepare_corpus(corpus, root, workdir, check_audio=not no_check, corpus_name=name,
                             exclude_out_of_range=exclude_out_of_range, **opts)
    except (CorpusLayoutError, ManifestError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    m = res.manifest
    click.echo(f"{res.manifest_path}: {len(m)} utterances, {m['speaker'].nunique()} speakers, {m['emotion'].nunique()} emotions")
    click.echo(summary_table(m).to_string())
    for excluded, what in ((True, "unusable file(s) excluded"), (False, "file(s) kept with a problem")):
        rows = res.bad[res.bad["excluded"].astype(bool) == excluded]
        if len(rows):
            click.echo(f"\n{len(rows)} {what} (listed in {res.bad_path}):", err=True)
            click.echo(rows[["path", "reason"]].head(20).to_string(index=False), err=True)


@command.command("info")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.option("--corpora", default=None, help="Comma-separated manifest names (default: all).")
@click.option("--speakers", is_flag=True, help="Also list speakers with gender and utterance counts.")
def info(workdir: str, corpora: str | None, speakers: bool) -> None:
    """Counts by corpus x emotion x gender for the manifests in WORKDIR, and duplicate audio.

    Rows whose audio is the same file or has identical bytes are listed by group: the
    leakage check refuses folds that put copies on both sides of a split.
    """
    from serray.corpora.info import speaker_table, summary_table
    from serray.duplicates import duplicate_audio
    from serray.manifest import ManifestError, load_manifests

    try:
        m = load_manifests(workdir, corpora.split(",") if corpora else None)
    except ManifestError as exc:
        fail(str(exc))
    click.echo(f"{len(m)} utterances, {m['corpus'].nunique()} corpora, {m['speaker'].nunique()} speakers")
    click.echo(summary_table(m).to_string())
    if speakers:
        click.echo("")
        click.echo(speaker_table(m).to_string())
    _echo_duplicates(duplicate_audio(m))


def _echo_duplicates(dups) -> None:
    """Print the duplicate-audio groups of a manifest (or that there are none)."""
    if dups.empty:
        click.echo("\nno duplicate audio (every row has its own file and content)")
        return
    click.echo(f"\n{len(dups)} utterances in {dups['group'].nunique()} group(s) share their audio "
               "(same file or identical bytes); folds with copies on both sides of a split are refused:")
    click.echo(dups.to_string(index=False))


@command.command("synth")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder; usable directly as a work directory.")
@click.option("--speakers", default=8, show_default=True, help="Speakers per corpus (half female, half male).")
@click.option("--per-emotion", default=6, show_default=True, help="Utterances per speaker and emotion.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same files).")
def synth(out: str, speakers: int, per_emotion: int, seed: int) -> None:
    """Write a small synthetic emotional-speech corpus (two corpora) plus manifests.

    OUT can be used as the --workdir of every other command.
    """
    from serray.corpora.info import summary_table
    from serray.corpora.synth import generate_synthetic_corpus

    try:
        m = generate_synthetic_corpus(out, n_speakers=speakers, utterances_per_emotion=per_emotion, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    click.echo(f"{Workdir(out).manifests_dir}: {len(m)} utterances, {m['corpus'].nunique()} corpora, {m['speaker'].nunique()} speakers")
    click.echo(summary_table(m).to_string())
