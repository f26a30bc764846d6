"""``serray pipeline``: prepare -> features -> train (or tune) in one process and one Ray session."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from serray.commands._common import address_option, fail, run_options, seed_option
from serray.workdir import Workdir

__all__ = ["command"]

log = logging.getLogger(__name__)


def _prepare(items: tuple[str, ...], workdir: str) -> None:
    """Prepare each ``CORPUS=ROOT`` whose manifest is not in the work directory yet."""
    from serray.corpora import CorpusLayoutError, prepare_corpus
    from serray.manifest import ManifestError

    for item in items:
        corpus, sep, root = item.partition("=")
        if not sep or not corpus or not root:
            fail(f"--prepare {item!r} must be CORPUS=ROOT, e.g. --prepare emodb=../shared/data/emodb/wav")
        if Workdir(workdir).manifest(corpus).exists():
            log.info("%s: manifest already in %s (delete it to scan %s again)", corpus, workdir, root)
            continue
        try:
            res = prepare_corpus(corpus, root, workdir)
        except (CorpusLayoutError, ManifestError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        m = res.manifest
        n_excluded = int(res.bad["excluded"].sum())
        kept = f", {len(res.bad) - n_excluded} kept with a problem" if len(res.bad) > n_excluded else ""
        click.echo(f"{res.manifest_path}: {len(m)} utterances, {m['speaker'].nunique()} speakers, {n_excluded} unusable{kept}"
                   + (f" (see {res.bad_path})" if res.bad_path else ""))


@click.command(name="pipeline")
@click.argument("model")
@click.option("--prepare", "prepare_items", multiple=True, metavar="CORPUS=ROOT",
              help="Corpus to prepare first (repeatable), e.g. emodb=../shared/data/emodb/wav; skipped when "
                   "its manifest exists.")
@run_options
@seed_option
@address_option
@click.option("--num-samples", "-n", default=None, type=int, help="Tune with this many trials instead of training once.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.pass_context
def command(ctx: click.Context, model: str, prepare_items: tuple[str, ...], seed: int, address: str | None,
            num_samples: int | None, device: str, **opts: Any) -> None:
    """Prepare corpora, extract MODEL's features and train it (or tune it), in one line.

    The same as `serray data prepare`, `serray features` and `serray train` (or `serray
    tune` with --num-samples) one after another, with the same outputs, but in one
    process: Ray starts once. Feature sets the cache lacks are extracted before training.

    \b
    Examples:
      serray pipeline svm --prepare emodb=../shared/data/emodb/wav --workdir W --protocol loso
      serray pipeline mlp --prepare emodb=../shared/data/emodb/wav --workdir W --num-samples 20
    """
    from serray.commands import train, tune

    Path(opts["workdir"]).mkdir(parents=True, exist_ok=True)
    _prepare(prepare_items, opts["workdir"])
    if num_samples is None:
        ctx.invoke(train.command, model=model, seed=seed, address=address, device=device, **opts)
    else:
        ctx.invoke(tune.command, model=model, seed=seed, address=address, device=device, num_samples=num_samples, **opts)
