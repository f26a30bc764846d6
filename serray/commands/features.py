"""`serray features`: extract feature sets into the work directory's cache, or list it."""

from __future__ import annotations

import logging
from typing import Any

import click

from serray.commands._common import address_option, fail, parse_value
from serray.workdir import Workdir

log = logging.getLogger(__name__)


def _parse_params(items: tuple[str, ...], sets: list[str]) -> dict[str, dict[str, Any]]:
    """``SET.KEY=VALUE`` items -> ``{set: {key: value}}`` (values parsed as YAML scalars)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            fail(f"--param {item!r} must be SET.KEY=VALUE, e.g. ssl.model=/models/hubert-base")
        lhs, value = item.split("=", 1)
        set_name, key = lhs.split(".", 1)
        if set_name not in sets:
            fail(f"--param {item!r} is for set {set_name!r}, which is not in --set {','.join(sets)}")
        out.setdefault(set_name, {})[key] = parse_value(value)
    return out


@click.command(name="features")
@click.argument("workdir", type=click.Path(file_okay=False))
@click.option("--set", "sets", default=None, metavar="NAMES", help="Comma-separated feature sets, e.g. egemaps,mfb,spectrogram.")
@click.option("--list", "list_", is_flag=True, help="Show what is cached in WORKDIR/features.")
@click.option("--param", "params", multiple=True, metavar="SET.KEY=VALUE", help="Extractor parameter, e.g. ssl.model=/models/hubert (repeatable).")
@click.option("--corpus", "corpora", multiple=True, help="Only these corpora's manifests (repeatable; default all).")
@address_option
@click.option("--num-actors", type=int, default=None, help="Actors per set (default: one per free CPU, or free GPUs / --gpus-per-actor); 0 runs in this process without Ray.")
@click.option("--gpus-per-actor", type=float, default=0.0, show_default=True, help="GPUs each actor reserves (ssl, spectrogram on GPU).")
@click.option("--chunk-size", type=int, default=None, help="Files per work item (default: about 32 chunks per actor, at most 64 files each).")
@click.option("--retry-failed", is_flag=True, help="Retry files an earlier run recorded as failing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--augment", "augment", multiple=True, metavar="NAME=VALUE",
              help="Also extract augmented copies of every utterance: speed=0.9,1.1 | noise=5:20[@pink|@white|@DIR] "
                   "(SNR dB) | gain=-6:6 (dB); repeatable, each copy applies all. Prints the tag for wave_augment.")
@click.option("--augment-copies", type=int, default=1, show_default=True, help="Augmented copies per utterance (with --augment).")
@click.option("--augment-seed", type=int, default=0, show_default=True, help="Seed of the augmentation draws (with --augment).")
@click.option("--ray/--no-ray", "use_ray", default=None,
              help="Force Ray actors (--ray) or a local process pool (--no-ray); default: a local process pool "
                   "for small CPU jobs without --address (at most 5000 files to extract), Ray otherwise.")
def command(
    workdir: str, sets: str | None, list_: bool, params: tuple[str, ...], corpora: tuple[str, ...], address: str | None,
    num_actors: int | None, gpus_per_actor: float, chunk_size: int | None, retry_failed: bool, no_progress: bool,
    augment: tuple[str, ...], augment_copies: int, augment_seed: int, use_ray: bool | None,
) -> None:
    """Extract feature sets for every utterance of WORKDIR's manifests, or list the cache.

    Work runs on a Ray actor pool (local Ray, or --address to join a cluster; small
    local CPU jobs use a local process pool of the same size, see --ray); results go
    to WORKDIR/features/<set>-<key>/ keyed by extractor, parameters, library versions and
    each audio file's identity, so a second run extracts nothing. Files that fail are
    listed with their reason (and recorded in the set's failures.parquet) while the rest
    is extracted. Exits non-zero when a set ends with no features at all.

    \b
    Sets: egemaps, compare, lld, mfb, mfcc, spectrogram, ssl.
    \b
    Examples:
      serray features W --set egemaps,mfb,spectrogram
      serray features W --set ssl --param ssl.model=/models/hubert-base --gpus-per-actor 0.5
      serray features W --set mfb --augment speed=0.9,1.1 --augment noise=5:20 --augment-copies 2
      serray features W --list

    With --augment, every utterance also gets --augment-copies augmented copies
    (speed perturbation, additive noise at a drawn SNR, gain), cached beside its
    features under the augmentation's tag (aug-xxxxxxxx: spec, copies and seed), so
    specs never mix and a second run extracts nothing. Train on them with the config
    key wave_augment=TAG (training utterances' copies only).
    """
    from serray.features import extract_features, extractor_names
    from serray.manifest import ManifestError, load_manifests

    if not sets and not list_:
        fail("give --set NAMES to extract (e.g. --set egemaps,mfb) or --list to show the cache")
    if sets:
        names = [s.strip() for s in sets.split(",") if s.strip()]
        known = extractor_names()
        unknown = [s for s in names if s not in known]
        if unknown:
            fail(f"unknown feature set(s) {unknown}; available: {', '.join(known)}")
        set_params = _parse_params(params, names)
        try:
            aug = _augmentation(augment, augment_copies, augment_seed)
            manifest = load_manifests(workdir, corpora or None)
            reports = extract_features(
                workdir, names, manifest, params=set_params, address=address, num_actors=num_actors,
                gpus_per_actor=gpus_per_actor, progress=not no_progress, chunk_size=chunk_size, retry_failed=retry_failed,
                use_ray=use_ray, augment=aug,
            )
        except (ManifestError, ValueError) as exc:
            fail(str(exc))
        _echo_reports(reports)
        if aug is not None:
            click.echo(f"augmented copies: tag {aug.tag} ({aug.cli()}); train on them with --set wave_augment={aug.tag}")
    if list_:
        _echo_cached(workdir)


def _augmentation(items: tuple[str, ...], copies: int, seed: int) -> Any:
    """The :class:`~serray.features.augment.WaveAugment` of ``--augment`` (``None`` without it).

    Raises:
        ValueError: A bad item, copy count or noise folder (one line).
    """
    if not items:
        if copies != 1 or seed != 0:
            raise ValueError("--augment-copies and --augment-seed need --augment NAME=VALUE, e.g. --augment speed=0.9,1.1")
        return None
    from serray.features.augment import parse_augment

    return parse_augment(items, copies=copies, seed=seed)


def _echo_reports(reports: dict) -> None:
    """Print each set's report and its failures; fail when a set ends with no features at all."""
    empty = []
    for rep in reports.values():
        click.echo(str(rep))
        if rep.n_failed:
            click.echo(f"\n{rep.n_failed} utterance(s) of {rep.name} failed (recorded in {rep.failures_path}):", err=True)
            click.echo(rep.failures[["path", "reason"]].head(20).to_string(index=False), err=True)
            if rep.n_failed > 20:
                click.echo(f"... and {rep.n_failed - 20} more", err=True)
        if rep.n_cached + rep.n_extracted == 0:
            empty.append(rep.name)
    if empty:
        fail(f"no features could be extracted for {', '.join(empty)}; see the failures above")


def _echo_cached(workdir: str) -> None:
    """Print the cached feature sets of ``workdir`` (``--list``)."""
    import pandas as pd

    from serray.features import list_cached

    table = list_cached(workdir)
    if table.empty:
        click.echo(f"no cached features in {Workdir(workdir).features_dir}")
        return
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        click.echo(table.drop(columns=["path"]).to_string(index=False))
