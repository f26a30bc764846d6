"""``serray train``: train one configuration of a model on every fold of a protocol."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from serray.commands._common import (
    address_option, fail, feature_param_option, parse_feature_params, seed_option, workdir_option,
)

__all__ = ["command", "parse_assignments", "parse_fold_resources", "read_config_file", "read_run_defaults", "RUN_KEYS"]

#: Keys of ``serray tune``'s best.yaml that ``train`` and ``seeds`` take as defaults
#: (an explicit option wins), so a tuned configuration trains on the data it was tuned on.
RUN_KEYS = ("features", "feature_params", "protocol", "labels", "normalize", "k", "fold_seed")


def parse_assignments(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["lr=0.01", "hidden_sizes=[64, 32]"]`` -> ``{"lr": 0.01, "hidden_sizes": [64, 32]}``.

    Values are parsed as YAML scalars/lists (``null`` is None, ``true`` a bool, bare
    words strings).

    Raises:
        ValueError: An item without ``=`` or with an empty key.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


class _EpochProgress:
    """Lock-step epoch callback: a progress bar with the folds' mean validation UA."""

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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def parse_fold_resources(text: str | None) -> tuple[float | None, float | None]:
    """``"cpu=1,gpu=0.5"`` -> ``(1.0, 0.5)``; a missing part is ``None`` (even share).

    Raises:
        ValueError: Unknown resource names or non-numeric values.
    """
    if not text:
        return None, None
    res: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in ("cpu", "gpu"):
            raise ValueError(f"--fold-resources expects cpu=N,gpu=M, got {text!r}")
        try:
            res[key] = float(value)
        except ValueError:
            raise ValueError(f"--fold-resources: {key} must be a number, got {value!r}") from None
    return res.get("cpu"), res.get("gpu")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Hyperparameters from a YAML file: a flat mapping, or one under a ``config:`` key.

    Raises:
        ValueError: The file does not hold a mapping.
    """
    from serray import io

    data = io.read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameters (optionally under 'config:')")
    return dict(data)


def read_run_defaults(path: str | Path, model: str) -> dict[str, Any]:
    """The :data:`RUN_KEYS` of a best.yaml (``{}`` for a flat hyperparameter file).

    Raises:
        ValueError: The file was written for another model.
    """
    from serray import io

    data = io.read_yaml(path)
    if not (isinstance(data, dict) and isinstance(data.get("config"), dict)):
        return {}
    if data.get("model") not in (None, model):
        raise ValueError(f"{path} is for model {data.get('model')!r}, not {model!r}")
    return {k: data[k] for k in RUN_KEYS if data.get(k) not in (None, {})}


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:.4f}"


@click.command(name="train")
@click.argument("model")
@workdir_option
@click.option("--features", "-f", default=None,
              help="Feature set (default: --config best.yaml's, else the model's default, e.g. egemaps or mfb).")
@feature_param_option
@click.option("--protocol", "-p", default=None,
              help="loso | loso-session | loco | kfold | cross-corpus (default: --config best.yaml's, else loso).")
@click.option("--labels", "-l", default=None, help="Label set: native, 4class, ... (default: best.yaml's, else native).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a hyperparameter (repeatable).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="YAML of hyperparameters (flat or under 'config:'); --set overrides it. serray tune's best.yaml "
                   "also gives the defaults of --features, --feature-param, --protocol, --labels, --normalize, --k.")
@click.option("--preset", default=None, help="Named preset of the model (e.g. small, reduced).")
@seed_option
@click.option("--normalize", type=click.Choice(["speaker", "global", "none"]), default=None,
              help="Feature z-normalisation: per speaker (own statistics), global (training statistics; the "
                   "default unless best.yaml says otherwise) or none.")
@click.option("--run", "run_name", default=None, help="Run name (default: derived from model, features, protocol, config, seed).")
@address_option
@click.option("--fold-resources", default=None, metavar="cpu=N,gpu=M",
              help="Resources of each fold actor; folds are packed onto as many actors as fit at once "
                   "(default: one actor per CPU, sharing CPUs and GPUs evenly).")
@click.option("--folds-per-actor", type=int, default=None, help="Folds hosted by each actor (default: as needed to fit).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.option("--corpus", "corpora", multiple=True, help="Use only these corpora's manifests (repeatable).")
@click.option("--k", default=None, type=int, help="Folds for --protocol kfold (default: best.yaml's, else 5).")
@click.option("--train-corpus", "train_corpora", multiple=True, help="Training corpora for cross-corpus.")
@click.option("--test-corpus", "test_corpora", multiple=True, help="Test corpora for cross-corpus.")
@click.option("--sequential", is_flag=True, help="Train the folds one after another in this process (no Ray).")
def command(
    model: str,
    workdir: str,
    features: str | None,
    feature_params: tuple[str, ...],
    protocol: str | None,
    labels: str | None,
    assignments: tuple[str, ...],
    config_file: str | None,
    preset: str | None,
    seed: int,
    normalize: str | None,
    run_name: str | None,
    address: str | None,
    fold_resources: str | None,
    folds_per_actor: int | None,
    device: str,
    corpora: tuple[str, ...],
    k: int | None,
    train_corpora: tuple[str, ...],
    test_corpora: tuple[str, ...],
    sequential: bool,
) -> None:
    """Train MODEL on every fold (folds in parallel on Ray) and write its predictions.

    Prints a per-fold table and the mean and pooled UA/WA; writes per-utterance logits of
    every fold's validation and test parts to W/predictions/<run>/ and the run record to
    W/runs/<run>/record.json.

    \b
    Examples:
      serray train svm --workdir W --features egemaps --protocol loso --normalize speaker
      serray train dcnn --workdir W --features mfb --set lr=0.0005 --seed 3
      serray train mlp --workdir W --config best.yaml --fold-resources cpu=1
      serray train dcnn --workdir W --features ssl --feature-param model=/models/hubert-base \\
        --feature-param pooling=frames --feature-param layer=9
    """
    from serray.models import registry
    from serray.training.run import train_run

    try:
        overrides = parse_assignments(assignments)
        num_cpus, num_gpus = parse_fold_resources(fold_resources)
        base = read_config_file(config_file) if config_file else None
        meta = read_run_defaults(config_file, model) if config_file else {}
        if meta:
            click.echo(f"defaults from {config_file}: " + ", ".join(f"{k_}={v}" for k_, v in meta.items())
                       + " (options given on the command line win)")
        spec = registry.get(model)
        progress = None
        if spec.backend == "torch" and not sequential:
            cfg = spec.config(preset=preset, overrides={**(base or {}), **overrides})  # as train_run resolves it
            progress = _EpochProgress(int(cfg.get("epochs") or 0) or None)
        result = train_run(
            workdir,
            model,
            features=features or meta.get("features"),
            feature_params=parse_feature_params(feature_params) if feature_params else meta.get("feature_params"),
            protocol=protocol or meta.get("protocol", "loso"),
            labels=labels or meta.get("labels", "native"),
            config=base,
            config_overrides=overrides,
            preset=preset,
            seed=seed,
            normalize=normalize or meta.get("normalize", "global"),
            run_name=run_name,
            address=address,
            corpora=list(corpora) or None,
            k=k or meta.get("k", 5),
            fold_seed=meta.get("fold_seed", 0),
            train_corpora=list(train_corpora) or None,
            test_corpora=list(test_corpora) or None,
            device=device,
            parallel=not sequential,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            folds_per_actor=folds_per_actor,
            command_line=" ".join(shlex.quote(a) for a in ["serray", *sys.argv[1:]]),
            on_epoch=progress,
        )
    except KeyError:
        raise
    except (ValueError, LookupError, FileNotFoundError) as exc:  # LookupError: features not extracted
        fail(str(exc))
    finally:
        if progress is not None:
            progress.close()

    tab = result.table.copy()
    for col in ("val_ua", "test_ua", "test_wa", "test_f1"):
        tab[col] = tab[col].map(_fmt)
    tab["seconds"] = tab["seconds"].map(lambda s: f"{s:.1f}")
    click.echo(f"run {result.run}  model {result.model}  config {result.config_id}  seed {result.seed}")
    click.echo(tab.drop(columns=["test_f1"]).to_string(index=False))
    click.echo(
        f"mean   UA {_fmt(result.mean['ua'])}  WA {_fmt(result.mean['wa'])}\n"
        f"pooled UA {_fmt(result.pooled['ua'])}  WA {_fmt(result.pooled['wa'])}  F1 {_fmt(result.pooled['f1'])}"
    )
    click.echo(f"wall time {result.seconds:.1f} s")
    click.echo(f"predictions: {result.predictions_path}")
    click.echo(f"run record:  {result.record_path}")
