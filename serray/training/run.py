"""One training run: one model configuration and seed on every fold of a protocol.

:func:`train_run` loads the manifests of a work directory, applies the label set, makes
the folds (checked for speaker leakage and for classes missing from training), loads the
features (utterances without features are left out with a warning), trains every fold
(in parallel Ray actors by default), and writes

* the per-utterance logits of the validation and test parts of every fold to the
  predictions store (``W/predictions/<run>/<config_id>__seed<seed>.parquet``),
* the run record ``W/runs/<run>/record.json``: model, config, ``config_id`` (a short
  hash of the model name and its config), seed, normalisation, features, protocol,
  label set, classes, library versions, timings per fold and in total, metrics per fold
  (validation and test UA/WA/F1, epochs), pooled test metrics (UA, WA, F1, confusion
  matrix, per-group UA by gender and corpus) and the mean over folds, and the command
  line,
* the fold membership ``W/runs/<run>/folds.parquet``.

"Pooled" metrics score the concatenated test predictions of all folds; "mean" metrics
average the per-fold test scores. Every file is written atomically.

Example:
    >>> from serray.training.spec import RunSpec
    >>> result = train_run(RunSpec("W", "svm", features="egemaps", protocol="loso"))  # doctest: +SKIP
    >>> result.pooled["ua"]                                                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import metrics
from serray.training.executor import IN_PROCESS_WORK_S, choose_execution, in_process_threads, run_folds
from serray.training.records import aux_summary, run_record, write_fold_predictions, write_run
from serray.training.resources import Resources
from serray.training.trainer import FoldResult
from serray.workdir import Workdir

__all__ = ["RunResult", "config_id", "default_run_name", "runs_dir", "train_run", "fold_table", "pooled_metrics", "aux_summary",
           "choose_execution", "in_process_threads", "IN_PROCESS_WORK_S"]

log = logging.getLogger(__name__)


def runs_dir(workdir: str | Path) -> Path:
    """``W/runs``."""
    return Workdir(workdir).runs_dir


def config_id(model: str, config: Mapping[str, Any]) -> str:
    """Short stable hash (10 hex digits) of a model name and its config.

    Example:
        >>> config_id("svm", {"C": 1.0}) == config_id("svm", {"C": 1.0})
        True
    """
    blob = json.dumps({"model": model, "config": dict(config)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


#: The settings a default run name spells; :func:`default_run_name` hashes the others.
NAMED_SETTINGS = ("model", "config", "config_id", "feature_tag", "features", "feature_params", "protocol", "labels",
                  "normalize", "seed")


def default_run_name(model: str, features: str, protocol: str, labels: str, normalize: str, cid: str, seed: int,
                     settings: Mapping[str, Any] | None = None) -> str:
    """``<model>-<features>-<protocol>-<labels>-<normalize>-<config_id>-<hash>-seed<seed>``.

    ``<hash>`` (:func:`serray.training.identity.settings_hash`) covers the run's other
    settings (``k`` of k-fold protocols, fold seed, validation rule, corpora, train and
    test corpora), so runs that differ in any of them get other names; without
    ``settings`` it is left out (the names before 2026-12).

    Example:
        >>> a = default_run_name("svm", "egemaps", "kfold", "native", "global", "c1", 0, {"k": 2})
        >>> a != default_run_name("svm", "egemaps", "kfold", "native", "global", "c1", 0, {"k": 4})
        True
    """
    from serray.training.identity import settings_hash

    tag = f"-{settings_hash(settings, NAMED_SETTINGS)}" if settings is not None else ""
    return f"{model}-{features}-{protocol}-{labels}-{normalize}-{cid}{tag}-seed{int(seed)}"


@dataclass
class RunResult:
    """What :func:`train_run` produced (all of it is also on disk).

    Attributes:
        run: Run name.
        model: Model name.
        config: The full config used.
        config_id: :func:`config_id` of it.
        seed: Training seed.
        classes: Class names in logit order.
        folds: One :class:`FoldResult` per fold.
        table: Per-fold table (see :func:`fold_table`).
        pooled: Test metrics over all folds' test predictions (``ua``, ``wa``, ``f1``).
        mean: Mean of the per-fold test metrics (``ua``, ``wa``, ``f1``).
        record: The run record as written.
        record_path: ``W/runs/<run>/record.json``.
        predictions_path: The predictions-store part written.
        seconds: Wall time of the whole run.
    """

    run: str
    model: str
    config: dict[str, Any]
    config_id: str
    seed: int
    classes: list[str]
    folds: list[FoldResult]
    table: pd.DataFrame
    pooled: dict[str, float]
    mean: dict[str, float]
    record: dict[str, Any] = field(default_factory=dict)
    record_path: Path | None = None
    predictions_path: Path | None = None
    seconds: float = 0.0


def fold_table(folds: Sequence[FoldResult], speaker_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per fold: ``fold, name, n_train, n_val, [val_speakers,] n_test, epochs,
    best_epoch, val_ua, test_ua, test_wa, test_f1, seconds`` (``val_speakers``: how many
    speakers the validation part holds, when ``speaker_of`` maps utt_id -> speaker)."""
    rows = []
    for r in folds:
        m = r.metrics()
        spk = {"val_speakers": len({speaker_of.get(str(u)) for u in r.validation_ids})} if speaker_of else {}
        rows.append(
            {
                "fold": r.index,
                "name": r.name,
                "n_train": r.n_train,
                "n_val": len(r.validation_ids),
                **spk,
                "n_test": len(r.test_ids),
                "epochs": r.epochs,
                "best_epoch": r.best_epoch,
                "val_ua": m["val_ua"],
                "test_ua": m["test_ua"],
                "test_wa": m["test_wa"],
                "test_f1": m["test_f1"],
                "seconds": r.seconds,
            }
        )
    return pd.DataFrame(rows)


def pooled_metrics(
    folds: Sequence[FoldResult],
    classes: Sequence[str],
    groups: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """UA, WA, macro F1, confusion matrix and per-group UA over all test predictions.

    Args:
        folds: Fold results.
        classes: Class names (logit order).
        groups: ``{column: {utt_id: value}}`` for per-group UA (e.g. gender, corpus).
    """
    y = np.concatenate([r.test_y for r in folds])
    pred = np.concatenate([r.test_logits.argmax(axis=1) for r in folds])
    ids = np.concatenate([r.test_ids for r in folds])
    labels = list(range(len(classes)))
    out: dict[str, Any] = {k: float(v) for k, v in metrics.summary(y, pred, labels=labels).items()}
    out["n"] = int(len(y))
    out["confusion"] = metrics.confusion(y, pred, labels=labels).tolist()
    out["per_group_ua"] = {}
    for col, mapping in (groups or {}).items():
        g = np.array([mapping.get(u, "?") for u in ids], dtype=object)
        if len(set(g.tolist())) > 1:
            out["per_group_ua"][col] = {str(k): float(v) for k, v in metrics.per_group_ua(y, pred, g, labels=labels).items()}
    return out


def train_run(
    run: Any,
    *,
    run_name: str | None = None,
    resources: Resources | None = None,
    feature_sets: Mapping[str, Any] | None = None,
    on_epoch: Any | None = None,
    command_line: str | None = None,
    keep_models: bool = True,
) -> RunResult:
    """Train one configuration of a model on every fold and write predictions and record.

    Args:
        run: The :class:`~serray.training.spec.RunSpec` (model, features, protocol,
            labels, normalisation, preset, config, seed, fold construction).
        run_name: Run name; default :func:`default_run_name` (which differs for any
            other setting). A run already holding results of other settings is refused.
        resources: Where the folds train (:class:`~serray.training.resources.Resources`;
            default a local Ray, device ``auto``). Its ``parallel``: fold actors on Ray
            (``True``) or in this process (``False``); ``None``
            (:func:`serray.training.executor.choose_execution`): in this process
            without ``address`` for scikit-learn models and for torch jobs estimated
            under :data:`IN_PROCESS_WORK_S` seconds on CPU (less than starting Ray
            would cost; the numbers are the same either way), on Ray otherwise. Its
            ``fold_cpus``/``fold_gpus``: each fold actor's (default: one actor per CPU,
            sharing the cluster evenly; see :func:`serray.training.actors.fold_resources`);
            ``folds_per_actor``: folds hosted by each actor (default: as needed to fit).
        feature_sets: Role -> an already loaded feature set (skips ``load_features``).
        on_epoch: Callback passed to :func:`serray.training.executor.run_folds`.
        command_line: Recorded in the run record.
        keep_models: Keep every fold's trained model under ``W/models/<run>``
            (:mod:`serray.artifacts`; ``serray predict`` and ``export`` read them).

    Raises:
        ValueError: Unknown model, feature kind not matching the model, a run name that
            is not a single path component, a run that holds results of other settings
            (:func:`serray.training.identity.check_run`), fold resources this machine lacks, or any
            argument error from the protocol and label set.
    """
    t_start = time.perf_counter()
    res = resources if resources is not None else Resources()
    spec, cfg, cid, exp, settings, name = _prepare_run(run, run_name, feature_sets, res)
    res, execution, t_prep = _placement(spec, cfg, exp, run, res)
    t_train = time.perf_counter()
    results = run_folds(spec, cfg, exp.inputs, exp.folds, normalize=run.normalize, seed=run.seed, resources=res,
                        on_epoch=on_epoch, keep_models=keep_models)
    meta = {
        "device": res.device,
        "parallel": res.parallel,
        "execution": execution,
        "fold_resources": res.fold_record(),
        "timings": {"total_s": 0.0, "prepare_s": t_prep - t_start, "train_s": time.perf_counter() - t_train,
                    "folds_s": {str(r.index): r.seconds for r in results}},
        "command_line": command_line,
        "settings": settings,
    }
    return _finish_run(run, exp, name, cfg, cid, results, meta, t_start)


def _prepare_run(run: Any, run_name: str | None, feature_sets: Mapping[str, Any] | None,
                 resources: Resources) -> tuple[Any, dict, str, Any, dict, str]:
    """Check the config, prepare the experiment, name the run and claim its folder (before any
    training): ``(spec, config, config_id, experiment, settings, run name)``."""
    from serray.predictions import check_name
    from serray.training.experiment import prepare_experiment
    from serray.training.identity import check_run, run_settings, write_settings
    from serray.training.trainer import check_config, check_stage_plans

    spec = run.model_spec()
    cfg = run.resolved_config()
    check_config(spec, cfg)  # bad training keys are found before any feature loading or Ray
    cid = config_id(spec.name, cfg)
    exp = prepare_experiment(run, cfg, feature_sets, resources=resources)
    check_stage_plans(spec, cfg, exp.inputs, [cfg.get("stages", "all")])
    settings = run_settings(run, exp, spec.name, cfg, cid, seed=run.seed)
    name = check_name("--run", run_name or default_run_name(spec.name, exp.feature_tag, run.protocol, run.labels,
                                                            run.normalize, cid, run.seed, settings))
    check_run(run.workdir, name, settings, "--run name")  # before any training (or probe)
    write_settings(run.workdir, name, settings)
    return spec, cfg, cid, exp, settings, name


def _placement(spec: Any, cfg: Mapping[str, Any], exp: Any, run: Any,
               resources: Resources) -> tuple[Resources, str, float]:
    """``(resources with parallel decided, how, when)``: where the folds train
    (:func:`choose_execution` unless ``resources.parallel`` is given) and when that was
    decided; then Ray is started (or joined) for fold actors, the fold request checked
    around it (:meth:`Resources.start_ray`)."""
    parallel = resources.parallel
    execution = "in this process (--sequential)" if parallel is False else "Ray fold actors"
    if parallel is None:
        parallel, execution = choose_execution(spec, cfg, exp, run.normalize, run.seed, resources)
        log.info("%s: folds train %s%s", spec.name, execution, "" if parallel else " (--ray uses Ray)")
    decided = time.perf_counter()
    resources = resources.replace(parallel=parallel)
    if parallel:
        resources.start_ray()
    return resources, execution, decided


def _finish_run(run: Any, exp: Any, name: str, cfg: dict, cid: str, results: list[FoldResult], meta: dict,
                t_start: float) -> RunResult:
    """Score the folds, write the predictions part, the run record and the fold membership."""
    pred_path, _ = write_fold_predictions(run.workdir, results, run=name, config_id=cid, seed=run.seed, classes=exp.classes)
    _keep_models(run, exp, name, cid, run.seed, results)
    manifest = exp.manifest
    groups = {c: dict(zip(manifest["utt_id"], manifest[c].astype(str))) for c in ("gender", "corpus") if c in manifest}
    pooled = pooled_metrics(results, exp.classes, groups)
    tab = fold_table(results, dict(zip(manifest["utt_id"].astype(str), manifest["speaker"].astype(str))))
    mean = {k_: float(tab[f"test_{k_}"].mean()) for k_ in ("ua", "wa", "f1")}
    total = time.perf_counter() - t_start
    meta["timings"]["total_s"] = total
    extra = {**meta, "predictions": str(pred_path.relative_to(Path(run.workdir)))}
    extra = {k: extra[k] for k in ("device", "parallel", "execution", "fold_resources", "timings", "predictions",
                                   "command_line", "settings")}
    record = run_record(run, exp, name, cfg, cid, results, pooled, mean, extra)
    record_path = write_run(run.workdir, name, exp.folds, record)
    log.info("finished run %s: pooled UA %.4f WA %.4f; mean UA %.4f", name, pooled["ua"], pooled["wa"], mean["ua"])
    return RunResult(
        run=name, model=exp.spec.name, config=cfg, config_id=cid, seed=int(run.seed), classes=exp.classes, folds=results,
        table=tab, pooled={k_: pooled[k_] for k_ in ("ua", "wa", "f1")}, mean=mean, record=record,
        record_path=record_path, predictions_path=pred_path, seconds=total,
    )


def _keep_models(run: Any, exp: Any, name: str, cid: str, seed: int, results: Sequence[FoldResult]) -> None:
    """Write the folds' kept models (those the executor returned) under ``W/models/<run>``."""
    if any(r.kept is not None for r in results):
        from serray.artifacts.keep import feature_inputs, write_kept_models

        write_kept_models(run.workdir, name, cid, seed, results, feature_inputs(exp.features, run.params_for))
