"""Seed training: one configuration (and named variants of it) x N seeds x every fold.

Every (variant, seed, fold) is one Ray task that trains its fold to completion; tasks
reuse Ray's worker processes, so thousands of fold trainings cost no actor start-up each.
The features go to the object store once. When all folds of a (variant, seed) are done,
their validation and test logits are written to the predictions store as one part
(``run`` = ``<prefix>-<variant>``, ``config_id`` = the config hash, ``seed``), so an
interrupted command loses nothing already written and a second call skips those parts.

Example:
    >>> train_seeds(RunSpec("W", "mlp", config=best["config"]), seeds=range(30),  # doctest: +SKIP
    ...             variants={"small": {"hidden_sizes": [64]}, "wide": {"hidden_sizes": [512]}})
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io, metrics
from serray.training.executor import fold_task, run_tasks
from serray.training.records import seed_record, write_fold_predictions, write_model_records
from serray.training.resources import Resources
from serray.workdir import Workdir

if TYPE_CHECKING:
    from serray.training.experiment import Experiment
    from serray.training.spec import RunSpec

__all__ = ["SeedsResult", "train_seeds", "seeds_run_name", "stored_parts", "parse_variant", "variant_overrides", "seed_metrics"]

log = logging.getLogger(__name__)


def parse_variant(text: str, spec: Any = None) -> tuple[str, dict[str, Any]]:
    """``"dann:gamma=-1,lr=0.01"`` -> ``("dann", {"gamma": -1, "lr": 0.01})`` (values read as
    ``--set`` reads them: YAML scalars, ``5e-4`` a number); a bare ``"base"`` is a variant
    without overrides. ``"NEW=ARM:key=value"`` names a new arm that starts from the model's
    arm ARM (its overrides, then the given ones); it needs the model's ``spec``.

    Example:
        >>> parse_variant("slow:lr=5e-4,freeze=true")
        ('slow', {'lr': 0.0005, 'freeze': True})
        >>> from serray.models import registry
        >>> parse_variant("backbone-slow=backbone:lr=5e-4", registry.get("adarl"))
        ('backbone-slow', {'variant': 'attention', 'g1': 0.0, 'lr': 0.0005})

    Raises:
        ValueError: Malformed text, or an ARM the model does not define.
    """
    from serray.training.resolve import parse_value

    name, sep, rest = text.partition(":")
    name, eq, arm = (part.strip() for part in name.partition("="))
    if not name or (eq and not arm):
        raise ValueError(f"variant {text!r}: expected NAME[:key=value[,key=value...]] or NEW=ARM[:key=value...], "
                         "e.g. dann:gamma=-1 or dann-slow=dann:lr=1e-4")
    out: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq_sign, value = item.partition("=")
        if not eq_sign or not key.strip():
            raise ValueError(f"variant {text!r}: {item!r} is not key=value")
        out[key.strip()] = parse_value(value)
    if eq:
        out = {**_arm_overrides(spec, arm, name, text), **out}
    return name, out


def _arm_overrides(spec: Any, arm: str, new: str, text: str) -> dict[str, Any]:
    """The overrides of the model's arm ``arm`` that the new variant ``new`` starts from."""
    if spec is None:
        raise ValueError(f"variant {text!r}: NEW=ARM needs the model, to read ARM's overrides")
    named = getattr(spec, "variants", None) or {}
    known = ", ".join(sorted({*named, "base"}))
    if arm not in named and arm != "base":
        raise ValueError(f"variant {text!r}: model {spec.name!r} has no variant {arm!r} to start from (its variants: {known})")
    if new in named or new == "base":
        raise ValueError(f"variant {text!r}: {new!r} is already a variant of model {spec.name!r}; "
                         f"give the new arm a name of its own, e.g. {arm}-mine={arm}:key=value")
    return dict(named.get(arm, {}))


def variant_overrides(spec: Any, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides of variant ``name``: the model's named variant of that name
    (``ModelSpec.variants``, e.g. a paper's ablation arm) with ``overrides`` over it.

    A name the model does not define is a new arm of the user's and needs overrides of
    its own; ``base`` (unless the model defines it) is the configuration as given.

    Example:
        >>> from serray.models import registry
        >>> variant_overrides(registry.get("adarl"), "backbone", {"lr": 0.1})
        {'variant': 'attention', 'g1': 0.0, 'lr': 0.1}
        >>> variant_overrides(registry.get("adarl"), "mine", {"g3": 0})
        {'g3': 0}
        >>> variant_overrides(registry.get("adarl"), "mmoe", {})
        Traceback (most recent call last):
        ...
        ValueError: model 'adarl' has no variant 'mmoe' (its variants: adarl, adversarial, backbone, base, emotion_only); name one of those, 'base' for the configuration as given, or give a new arm its overrides, e.g. --variant mmoe:key=value

    Raises:
        ValueError: ``name`` is neither a variant of the model nor ``base`` and has no overrides.
    """
    named = getattr(spec, "variants", None) or {}  # a Mapping; dmf's knows names by prefix (remap-<domain>)
    if name not in named and name != "base" and not overrides:
        known = ", ".join(sorted({*named, "base"}))
        raise ValueError(f"model {spec.name!r} has no variant {name!r} (its variants: {known}); name one of those, "
                         f"'base' for the configuration as given, or give a new arm its overrides, "
                         f"e.g. --variant {name}:key=value")
    return {**dict(named.get(name, {})), **dict(overrides)}


def seed_metrics(part: pd.DataFrame, classes: Sequence[str]) -> dict[str, float]:
    """UA/WA/F1 of one seed's predictions pooled over folds, and ``ua_fold``/``wa_fold``:
    each fold scored alone, averaged over folds (as papers that average per-fold
    confusion matrices report).

    Example:
        >>> df = pd.DataFrame({"fold": [0, 0, 0, 1], "label": list("abab"), "pred": list("abbb")})
        >>> {k: round(v, 3) for k, v in seed_metrics(df, ["a", "b"]).items()}
        {'ua': 0.75, 'wa': 0.75, 'f1': 0.733, 'ua_fold': 0.875, 'wa_fold': 0.833}
    """
    m = metrics.summary(part["label"].to_numpy(), part["pred"].to_numpy(), classes)
    per_fold = [metrics.summary(g["label"].to_numpy(), g["pred"].to_numpy(), classes) for _, g in part.groupby("fold")]
    m["ua_fold"] = float(np.mean([f["ua"] for f in per_fold]))
    m["wa_fold"] = float(np.mean([f["wa"] for f in per_fold]))
    return m


@dataclass
class SeedsResult:
    """Per-variant run names, the per-seed metrics table (the seeds asked for) and, per
    variant, every seed its run holds (what its record describes; may be more than asked)."""

    runs: dict[str, str]
    config_id: dict[str, str]
    table: pd.DataFrame
    skipped: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0
    stored_seeds: dict[str, list[int]] = field(default_factory=dict)


def stored_parts(workdir: Any, runs: Mapping[str, str], cids: Mapping[str, str],
                 seeds: Sequence[int]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(todo, done)``: the (variant, seed) pairs whose predictions part is missing,
    unreadable or damaged (bytes that do not match its checksum; a warning names each such
    part: it is trained again), and the others."""
    from serray.predictions import part_problem, predictions_dir

    todo, done = [], []
    for name in runs:
        for s in seeds:
            part = predictions_dir(workdir) / runs[name] / f"{cids[name]}__seed{s}.parquet"
            problem = part_problem(part) if part.exists() else "missing"
            if problem != "missing" and problem is not None:
                log.warning("%s: %s; it is trained again", part, problem)
            (todo if problem else done).append((name, s))
    return todo, done


def train_seeds(
    run: Any,
    *,
    seeds: Sequence[int] = range(10),
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    run_prefix: str | None = None,
    resources: Resources | None = None,
    progress: bool = True,
    keep_models: bool = True,
) -> SeedsResult:
    """Train ``run``'s config (x ``variants``) with every seed on every fold, in parallel on Ray.

    Args:
        run: The :class:`~serray.training.spec.RunSpec` (its ``config`` holds the
            hyperparameters over the defaults, e.g. ``best.yaml``'s; its ``seed`` is unused).
        seeds: Training seeds; folds stay the same for all (``run.fold_seed``).
        variants: ``{name: overrides}`` trained side by side (default ``{"base": {}}``); a
            name the model defines (``ModelSpec.variants``) starts from its overrides.
        run_prefix: Run names are ``<prefix>-<variant>`` (default :func:`seeds_run_name`,
            which differs for any other setting). A run that already holds results of
            other settings (another config, k, validation rule, corpora, normalisation,
            ...) is refused before any training.
        resources: Where the fold tasks run (:class:`~serray.training.resources.Resources`:
            cluster ``address``, ``device``, each task's ``fold_cpus`` (default 1) and
            ``fold_gpus`` (default 0); always on Ray).
        keep_models: as for :func:`serray.training.run.train_run` (models under
            ``W/models/<prefix>-<variant>/<config>__seed<s>``).

    A part in the store that cannot be read (truncated or damaged) is trained again,
    with a warning naming it. The result's table covers ``seeds``; each run's record
    covers every seed its store holds (e.g. 4 after ``--n 4`` then ``--n 2``).

    Raises:
        ValueError: Unknown override keys, no seeds, run names that are not single path
            components, fold resources no node has, or preparation errors.
    """
    from serray.training.experiment import prepare_experiment
    from serray.training.trainer import check_config, check_stage_plans

    t0 = time.perf_counter()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("train_seeds needs at least one seed")
    spec = run.model_spec()
    workdir = run.workdir
    variants = dict(variants or {"base": {}})
    base = run.resolved_config()
    cfgs = {name: check_config(spec, run.resolved_config(variant_overrides(spec, name, ov))) for name, ov in variants.items()}
    res = (resources if resources is not None else Resources()).with_defaults(fold_cpus=1.0, fold_gpus=0.0)
    exp = prepare_experiment(run, base, resources=res, wave_augment=[c.get("wave_augment", "none") for c in cfgs.values()])
    check_stage_plans(spec, base, exp.inputs, [c.get("stages", "all") for c in cfgs.values()])
    cids, settings, runs = _claim_runs(run, exp, cfgs, run_prefix)

    todo, skipped = stored_parts(workdir, runs, cids, seeds)
    if skipped:
        log.info("%d (variant, seed) pair(s) already in the predictions store are skipped", len(skipped))

    if todo:
        _train_parts(run, exp, todo, cfgs, runs, cids, resources=res, progress=progress, keep=keep_models)

    stored = _stored_table(workdir, variants, runs, cids, exp.classes)
    for name in variants:
        record = seed_record(run, exp, name=runs[name], variant=name, cfg=cfgs[name], cid=cids[name], table=stored,
                             settings=settings[name])
        io.write_json(record, Workdir(run.workdir).run_record(runs[name]))
    table = stored[stored["seed"].isin(seeds)].reset_index(drop=True)
    return SeedsResult(runs, cids, table, skipped, time.perf_counter() - t0, _held_seeds(stored, runs, seeds))


def _claim_runs(run: RunSpec, exp: Experiment, cfgs: Mapping[str, dict],
                run_prefix: str | None) -> tuple[dict[str, str], dict[str, dict], dict[str, str]]:
    """``(config ids, settings, run names)`` per variant; each run folder is checked to hold no
    results of other settings and claimed, all before any training."""
    from serray.predictions import check_name
    from serray.training.identity import check_run, run_settings, write_settings
    from serray.training.run import config_id as make_config_id

    name_of = exp.spec.name
    cids = {name: make_config_id(name_of, cfg) for name, cfg in cfgs.items()}
    settings = {name: run_settings(run, exp, name_of, cfgs[name], cid) for name, cid in cids.items()}
    runs = {name: check_name("run (--run-prefix-VARIANT)", seeds_run_name(run_prefix, exp, run, name, settings[name]))
            for name in cfgs}
    for name in cfgs:  # before any training: a run folder never holds results of two settings
        check_run(run.workdir, runs[name], settings[name], "--run-prefix")
    for name in cfgs:
        write_settings(run.workdir, runs[name], settings[name])
    return cids, settings, runs


def _held_seeds(stored: pd.DataFrame, runs: Mapping[str, str], seeds: Sequence[int]) -> dict[str, list[int]]:
    """Per variant, every seed its run holds (logged where that is more than asked)."""
    held = {name: sorted(int(x) for x in stored.loc[stored["variant"] == name, "seed"].unique()) for name in runs}
    for name, have in held.items():
        if set(have) - set(seeds):
            log.info("run %s holds %d seeds (%s), more than the %d asked; its record describes all of them",
                     runs[name], len(have), _seed_text(have), len(seeds))
    return held


def _train_parts(run: RunSpec, exp: Experiment, todo: Sequence[tuple[str, int]], cfgs: Mapping[str, dict],
                 runs: Mapping[str, str], cids: Mapping[str, str], *, resources: Resources, progress: bool,
                 keep: bool = True) -> None:
    """Every fold of every (variant, seed) of ``todo`` as one Ray task (:func:`serray.training.executor.run_tasks`);
    each (variant, seed)'s predictions part and model records are written when its last fold is done."""
    from tqdm import tqdm

    from serray.training.actors import put_inputs

    resources.start_ray()
    shared = put_inputs(exp.inputs)
    request = resources.request()
    threads = max(1, int(request["cpu"]))
    jobs = [((name, s), (exp.spec, cfgs[name], shared, fold, run.normalize, s, resources.device, threads, keep))
            for name, s in todo for fold in exp.folds]
    done: dict[tuple[str, int], list] = {}
    bar = tqdm(total=len(jobs), desc="seed folds", unit="fold", disable=not progress)
    for (name, s), result in run_tasks(fold_task, jobs, num_cpus=request["cpu"], num_gpus=request["gpu"], max_retries=2,
                                          custom=resources.fold_custom):
        done.setdefault((name, s), []).append(result)
        bar.update(1)
        if len(done[(name, s)]) == len(exp.folds):
            results = sorted(done.pop((name, s)), key=lambda r: r.index)
            write_fold_predictions(run.workdir, results, run=runs[name], config_id=cids[name], seed=s, classes=exp.classes)
            write_model_records(run.workdir, runs[name], cids[name], s, results)
            if keep:
                from serray.artifacts.keep import feature_inputs, write_kept_models

                write_kept_models(run.workdir, runs[name], cids[name], s, results, feature_inputs(exp.features, run.params_for))
    bar.close()


def _seed_text(seeds: Sequence[int]) -> str:
    """``0-3`` for a contiguous range, else the list."""
    s = sorted(seeds)
    return f"{s[0]}-{s[-1]}" if len(s) > 1 and s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


def seeds_run_name(prefix: str | None, exp: Any, run: Any, variant: str, settings: Mapping[str, Any]) -> str:
    """``<prefix>-<variant>``; by default
    ``seeds-<model>-<features>-<protocol>-<labels>-<normalize>-<variant>-<hash>``, the hash
    (:func:`serray.training.identity.settings_hash`) covering the variant's config and the
    settings the name does not spell (k, fold seed, validation rule, corpora), so that a
    changed setting makes a new run."""
    from serray.training.identity import settings_hash

    if prefix:
        return f"{prefix}-{variant}"
    spelled = ("model", "features", "feature_tag", "feature_params", "protocol", "labels", "normalize")
    return (f"seeds-{exp.spec.name}-{exp.feature_tag}-{run.protocol}-{run.labels}-{run.normalize}-{variant}-"
            f"{settings_hash(settings, spelled)}")


def _stored_table(workdir: Any, variants: Mapping, runs: Mapping[str, str], cids: Mapping[str, str],
                  classes: Sequence[str]) -> pd.DataFrame:
    """Per (variant, seed, split) metrics of every seed the store holds for each variant's config."""
    from serray.predictions import read_predictions

    rows = []
    for name in variants:
        df = read_predictions(workdir, [runs[name]])
        df = df[df["config_id"] == cids[name]]
        for s, g in df.groupby("seed"):
            for split in ("validation", "test"):
                m = seed_metrics(g[g["split"] == split], classes)
                rows.append({"variant": name, "run": runs[name], "seed": int(s), "split": split, **m})
    return pd.DataFrame(rows, columns=["variant", "run", "seed", "split"] if not rows else None)
