"""``serray train``: train one configuration of a model on every fold of a protocol."""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
from typing import Any

import click

from serray.commands._common import (
    address_option, check_name_option, fail, resources_from_flags, run_options, run_spec_from_options, seed_option,
    track_option, track_results, track_target,
)

__all__ = ["command"]


log = logging.getLogger(__name__)


class _EpochProgress:
    """Lock-step epoch callback: a progress bar with the folds' mean validation UA, and a
    log line per epoch with each loss term (mean over the folds still training)."""

    def __init__(self, epochs: int | None) -> None:
        self.epochs = epochs
        self.bar: Any = None

    def __call__(self, epoch: int, metrics: list[dict]) -> None:
        import numpy as np
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.epochs, desc="epochs (all folds)", unit="epoch", file=sys.stderr)
        val = [m.get("val_ua") for m in metrics if m.get("val_ua") is not None]
        active = sum(not m.get("stopped", False) for m in metrics)
        self.bar.set_postfix_str(
            f"mean val UA {np.mean(val):.3f}, folds training {active}/{len(metrics)}" if val else "", refresh=False
        )
        self.bar.update(1)
        parts = [m.get("loss_parts") or {} for m in metrics if not m.get("stopped") or m.get("epoch") == epoch]
        names = sorted({k for p in parts for k in p})
        if names:
            terms = ", ".join(f"{k} {np.nanmean([p.get(k, np.nan) for p in parts]):.4f}" for k in names)
            log.info("epoch %d: train loss terms (mean over %d folds) %s; mean val UA %s", epoch, len(parts), terms,
                     f"{np.mean(val):.3f}" if val else "-")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:.4f}"


@click.command(name="train")
@click.argument("model")
@run_options
@seed_option
@click.option("--run", "run_name", default=None, help="Run name (default: derived from model, features, protocol, labels, normalisation, config, "
                   "a hash of the other settings (k, fold seed, validation, corpora) and seed). A run that "
                   "already holds results of other settings is refused.")
@address_option
@click.option("--fold-resources", default=None, metavar="cpu=N,gpu=M,NAME=X",
              help="Resources of each fold actor; folds are packed onto as many actors as fit at once "
                   "(default: one actor per CPU, sharing CPUs and GPUs evenly).")
@click.option("--folds-per-actor", type=int, default=None, help="Folds hosted by each actor (default: as needed to fit).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.option("--sequential", is_flag=True, help="Train the folds one after another in this process (no Ray).")
@click.option("--keep-models/--no-keep-models", default=True, show_default=True,
              help="Keep every fold's trained model under W/models/RUN (for serray predict and export).")
@track_option
@click.option("--ray", "use_ray", is_flag=True,
              help="Train the folds on Ray actors even for scikit-learn models (which otherwise run in this "
                   "process when no --address is given: the same numbers without Ray's start-up).")
def command(model: str, seed: int, run_name: str | None, address: str | None, fold_resources: str | None, keep_models: bool,
            folds_per_actor: int | None, device: str, sequential: bool, use_ray: bool, track: str | None,
            **opts: Any) -> None:
    """Train MODEL on every fold (folds in parallel on Ray) and write its predictions.

    Prints a per-fold table and the mean and pooled UA/WA; writes per-utterance logits of
    every fold's validation and test parts to W/predictions/<run>/ and the run record to
    W/runs/<run>/record.json. Models with several loss terms log each term per epoch.

    \b
    Examples:
      serray train svm --workdir W --features egemaps --protocol loso --normalize speaker
      serray train dcnn --workdir W --features mfb --set lr=0.0005 --set stages=fc --seed 3
      serray train mtl_cnn --workdir W --features mfb --protocol loso --set w_gender=0.5
      serray train mgnas --workdir W --features mfb+mfcc+egemaps --domain language --set gating=nas
      serray train mlp --workdir W --config best.yaml --fold-resources cpu=1
      serray train dcnn --workdir W --features ssl --feature-param model=/models/hubert-base \\
        --feature-param pooling=frames --feature-param layer=9
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from serray.training.run import train_run
    from serray.training.trainer import total_epochs

    progress = None
    check_name_option("--run", run_name)
    target = track_target(track, opts["workdir"])
    try:
        resources = resources_from_flags(address=address, fold_resources=fold_resources, folds_per_actor=folds_per_actor,
                                         device=device, sequential=sequential, use_ray=use_ray)
        run = run_spec_from_options(model, opts, seed=seed)
        spec = run.model_spec()
        if spec.backend == "torch" and not sequential:
            progress = _EpochProgress(total_epochs(spec, run.resolved_config()))
        with logging_redirect_tqdm() if progress is not None else contextlib.nullcontext():
            result = train_run(
                run, run_name=run_name, resources=resources,
                command_line=" ".join(shlex.quote(a) for a in ["serray", *sys.argv[1:]]), on_epoch=progress,
                keep_models=keep_models,
            )
    except (ValueError, LookupError, FileNotFoundError) as exc:  # LookupError: features not extracted
        fail(str(exc))
    finally:
        if progress is not None:
            progress.close()
    _print_result(result)
    track_results(opts["workdir"], [result.run], target)


def _print_result(result: Any) -> None:
    tab = result.table.copy()
    for col in ("val_ua", "test_ua", "test_wa", "test_f1"):
        tab[col] = tab[col].map(_fmt)
    tab["seconds"] = tab["seconds"].map(lambda s: f"{s:.1f}")
    click.echo(f"run {result.run}  model {result.model}  config {result.config_id}  seed {result.seed}  "
               f"validation: {result.record.get('validation', 'coverage')} rule")
    click.echo(tab.drop(columns=["test_f1"]).to_string(index=False))
    click.echo(
        f"mean   UA {_fmt(result.mean['ua'])}  WA {_fmt(result.mean['wa'])}\n"
        f"pooled UA {_fmt(result.pooled['ua'])}  WA {_fmt(result.pooled['wa'])}  F1 {_fmt(result.pooled['f1'])}"
    )
    aux = result.record.get("aux_labels") or {}
    for role, a in aux.items():
        click.echo(f"auxiliary label {role} ({a['column']}): known for {a['known']} of {a['known'] + a['unknown']} utterances")
    if result.record.get("transductive"):
        click.echo(f"transductive: {result.record['transductive_reason']}")
    click.echo(f"wall time {result.seconds:.1f} s")
    click.echo(f"predictions: {result.predictions_path}")
    click.echo(f"run record:  {result.record_path}")
