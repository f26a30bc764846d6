"""Experiment tracking: serray's results logged to MLflow, grouped the way they were made.

Every serray command writes its results to the work directory first (run records, trial
records, ensemble summaries); tracking then copies them into an MLflow tracking store.
So a tracker never holds a number the work directory lacks, a search on a cluster without a
tracking server is logged afterwards (``serray track``), and logging twice changes nothing.

What one source becomes in MLflow (experiment ``serray`` unless named):

- ``RUN`` (a ``serray train`` run): one MLflow run with the configuration and the run's
  settings as params, pooled and fold-mean UA/WA/F1 as metrics, one nested run per fold
  (its metrics, and per-epoch ``epoch_train_loss``, ``epoch_val_loss`` and
  ``epoch_val_ua`` as steps), the record
  as an artifact. A ``serray seeds`` run: one nested run per seed instead.
- ``tune:EXPERIMENT``: one run for the search (best.yaml and the leaderboard as
  artifacts), one nested run per trial (its configuration, objective, validation and test
  UA, the validation-UA curve as steps), and per trial one nested run per fold.
- ``ensemble:NAME``: one run with the summary's numbers and the ensemble's tables.
- ``report:NAME`` (a folder under ``W/reports``): one run holding the report's files
  (report.md, report.html, summary.csv, table.tex, paired tests, figures) as artifacts.

Transductive or optimistic results carry the tag ``serray_caveat`` with the record's own
sentence, so they are named in the tracker too.

The default store is local, inside the work directory (``W/tracking/mlflow.db``, SQLite,
artifacts under ``W/tracking/artifacts``; no server needed; browse it with
``mlflow ui --backend-store-uri sqlite:///W/tracking/mlflow.db``). ``mlflow:URI`` logs to
a tracking server or another store instead. A source already logged with the same content
is left as it is; one whose record changed is replaced (never duplicated).

``wandb[:PROJECT]`` logs the same runs to Weights & Biases instead, offline into
``W/tracking/wandb`` (``wandb sync`` uploads them; project ``serray`` unless named): W&B
has no nested runs, so the source is the run group and fold/seed/trial the job type (see
:mod:`serray.tracking_wandb`).

Example:
    >>> parse_target("mlflow", "/tmp/w").uri
    'sqlite:////tmp/w/tracking/mlflow.db'
    >>> parse_target("mlflow:http://tracker:5000", "/tmp/w").uri
    'http://tracker:5000'
    >>> parse_target("wandb:ser", "/tmp/w").experiment
    'ser'
    >>> parse_target("tensorboard", "/tmp/w")
    Traceback (most recent call last):
    ...
    ValueError: --track 'tensorboard': unknown tracker (choose from: mlflow, mlflow:URI, wandb, wandb:PROJECT)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from serray import io
from serray.workdir import Workdir

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["TrackTarget", "Tracked", "parse_target", "check_available", "track", "TRACKERS"]

log = logging.getLogger(__name__)

#: The trackers ``--track`` accepts.
TRACKERS: tuple[str, ...] = ("mlflow", "mlflow:URI", "wandb", "wandb:PROJECT")
_EXPERIMENT = "serray"
#: Settings of a run record logged as params beside its configuration.
_SETTINGS = ("model", "features", "feature_params", "protocol", "labels", "normalize", "k", "fold_seed",
             "validation", "preset", "variant", "seed", "seeds", "config_id", "n_utterances", "corpora")


@dataclass(frozen=True)
class TrackTarget:
    """Where tracking logs: the tracker, its URI, the experiment and the artifact root."""

    kind: str
    uri: str
    experiment: str = _EXPERIMENT
    artifact_root: str | None = None


@dataclass(frozen=True)
class Tracked:
    """One source logged: its run id and what happened (``logged``, ``unchanged``, ``replaced``)."""

    source: str
    run_id: str
    action: str
    tracker: str = "MLflow"


def parse_target(text: str, workdir: str | Path, experiment: str | None = None) -> TrackTarget:
    """``--track`` text -> :class:`TrackTarget` (``mlflow`` is the local store in ``W/tracking``;
    ``wandb[:PROJECT]`` the offline W&B store in ``W/tracking/wandb``, ``experiment`` the project)."""
    kind, _, uri = text.strip().partition(":")
    if kind not in ("mlflow", "wandb"):
        raise ValueError(f"--track {text!r}: unknown tracker (choose from: {', '.join(TRACKERS)})")
    w = Workdir(Path(workdir).resolve())
    if kind == "wandb":
        return TrackTarget("wandb", str(w.wandb_dir), uri or experiment or _EXPERIMENT)
    folder = w.tracking_dir
    if uri:
        return TrackTarget("mlflow", uri, experiment or _EXPERIMENT)
    return TrackTarget("mlflow", f"sqlite:///{folder / 'mlflow.db'}", experiment or _EXPERIMENT,
                       (folder / "artifacts").as_uri())


def check_available(target: TrackTarget) -> None:
    """Raise ``ValueError`` (with the fix) when the tracker's package is not installed."""
    if target.kind == "wandb":
        from serray.tracking_wandb import check_wandb

        check_wandb()
        return
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--track {target.kind} needs MLflow: pip install 'serray[tracking]' (or mlflow-skinny)") from exc


def _client(target: TrackTarget) -> "MlflowClient":
    check_available(target)
    from mlflow.tracking import MlflowClient

    if target.uri.startswith("sqlite:///"):
        Path(target.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=target.uri)


def _experiment_id(client: "MlflowClient", target: TrackTarget) -> str:
    exp = client.get_experiment_by_name(target.experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(target.experiment, artifact_location=target.artifact_root)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested dicts as ``a.b`` keys; other values as text (MLflow params are strings)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None:
        out[prefix] = (json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value))[:6000]
    return out


def _numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a mapping (booleans and text left out)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[prefix + str(k)] = float(v)
    return out


def _caveat(record: Mapping[str, Any]) -> str | None:
    if record.get("transductive"):
        return str(record.get("transductive_reason") or "transductive")
    for key in ("note", "validation_note", "selection"):
        text = record.get(key)
        if isinstance(text, str) and "optimistic" in text.lower():
            return text
    return None


class _Logger:
    """Creates MLflow runs (nested under a parent) and logs params, metrics, steps and files."""

    def __init__(self, client: "MlflowClient", experiment_id: str, source: str, digest: str) -> None:
        self.client, self.exp, self.source, self.digest = client, experiment_id, source, digest

    def start(self, name: str, kind: str, parent: str | None = None, caveat: str | None = None) -> str:
        tags = {"serray_source": self.source, "serray_kind": kind, "serray_digest": self.digest}
        if parent:
            tags["mlflow.parentRunId"] = parent
        if caveat:
            tags["serray_caveat"] = caveat[:5000]
        return self.client.create_run(self.exp, run_name=name, tags=tags).info.run_id

    def log(self, run_id: str, params: Mapping[str, str] | None = None, metrics: Mapping[str, float] | None = None,
            steps: Mapping[str, list[float]] | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
        for key, curve in (steps or {}).items():
            ms += [Metric(key, float(v), now, i + 1) for i, v in enumerate(curve) if v is not None and math.isfinite(float(v))]
        ps = [Param(k, v) for k, v in (params or {}).items()]
        for i in range(0, len(ps), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            self.client.log_batch(run_id, params=ps[i:i + 100])
        for i in range(0, len(ms), 1000):
            self.client.log_batch(run_id, metrics=ms[i:i + 1000])

    def files(self, run_id: str, paths: Iterable[Path]) -> None:
        for p in paths:
            if p.is_file():
                self.client.log_artifact(run_id, str(p))

    def file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        """One file, stored under ``folder`` of the run's artifacts (``None``: at the top)."""
        self.client.log_artifact(run_id, str(path), folder)

    def end(self, run_id: str) -> None:
        self.client.set_terminated(run_id)


class _MlflowStore:
    """The MLflow store of a target: earlier runs of a source, their removal, new loggers."""

    label = "MLflow"

    def __init__(self, target: TrackTarget) -> None:
        self.client = _client(target)
        self.exp_id = _experiment_id(self.client, target)

    def previous(self, source: str) -> tuple[str | None, set[str]]:
        old = _already(self.client, self.exp_id, source)
        roots = [r.info.run_id for r in old if "mlflow.parentRunId" not in r.data.tags]
        return (roots[0] if roots else None), {r.data.tags.get("serray_digest", "") for r in old}

    def remove(self, source: str) -> None:
        for r in _already(self.client, self.exp_id, source):
            self.client.delete_run(r.info.run_id)

    def logger(self, source: str, digest: str) -> _Logger:
        return _Logger(self.client, self.exp_id, source, digest)

    def commit(self, lg: _Logger, root: str) -> None:
        """Nothing to record: MLflow's own tags name the source and digest."""


def _digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:16]


def _log_train_run(lg: _Logger, record: Mapping[str, Any], name: str, files: list[Path]) -> str:
    metrics = record.get("metrics") or {}
    parent = lg.start(name, "run", caveat=_caveat(record))
    params = _flatten("", {k: record.get(k) for k in _SETTINGS}, {})
    _flatten("config", record.get("config") or {}, params)
    summary = {**_numbers(metrics.get("pooled") or {}, "pooled_"), **_numbers(metrics.get("mean") or {}, "mean_")}
    summary.update(_numbers({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))
    lg.log(parent, params, summary)
    lg.files(parent, files)
    history = record.get("history") or {}
    for fold in metrics.get("folds") or []:
        child = lg.start(f"{name} fold {fold.get('fold')}", "fold", parent)
        epochs = history.get(str(fold.get("fold"))) or []
        curves = {f"epoch_{k}": [e.get(k) for e in epochs] for k in ("train_loss", "val_loss", "val_ua")
                  if any(isinstance(e.get(k), (int, float)) for e in epochs)}
        lg.log(child, {"fold": str(fold.get("fold")), "name": str(fold.get("name"))}, _numbers(fold), curves)
        lg.end(child)
    for seed in metrics.get("per_seed") or []:
        child = lg.start(f"{name} seed {seed.get('seed')}", "seed", parent)
        lg.log(child, {"seed": str(seed.get("seed"))}, _numbers(seed))
        lg.end(child)
    lg.end(parent)
    return parent


def _log_tune(lg: _Logger, w: Workdir, experiment: str) -> str:
    best = io.read_yaml(w.tune_best(experiment)) if w.tune_best(experiment).exists() else {}
    parent = lg.start(f"tune:{experiment}", "tune", caveat=_caveat(best) if best else None)
    params = _flatten("", {k: best.get(k) for k in (*_SETTINGS, "experiment", "trial_id", "selection")}, {})
    _flatten("best", best.get("config") or {}, params)
    lg.log(parent, params, _numbers(best, "best_"))
    lg.files(parent, [w.tune_best(experiment), w.tune_leaderboard(experiment)])
    for path in sorted(w.tune_trials(experiment).glob("*.json")):
        trial = io.read_json(path)
        child = lg.start(f"trial {trial.get('trial_id', path.stem)}", "trial", parent)
        lg.log(child, _flatten("config", trial.get("config") or {}, {}), _numbers(trial),
               {"val_ua_curve": list(trial.get("val_ua_curve") or [])})
        for fold in trial.get("folds") or []:
            grand = lg.start(f"trial {trial.get('trial_id', path.stem)} fold {fold.get('fold')}", "fold", child)
            lg.log(grand, {"fold": str(fold.get("fold")), "name": str(fold.get("name"))}, _numbers(fold))
            lg.end(grand)
        lg.end(child)
    lg.end(parent)
    return parent


def _log_ensemble(lg: _Logger, w: Workdir, name: str) -> str:
    folder = w.ensemble(name)
    summary = io.read_json(folder / "summary.json")
    parent = lg.start(f"ensemble:{name}", "ensemble", caveat=_caveat(summary))
    metrics = _numbers(summary)
    params = _flatten("", {k: v for k, v in summary.items() if isinstance(v, (str, int, float, list))
                           and not isinstance(v, bool) and k not in metrics}, {})
    lg.log(parent, params, metrics)
    lg.files(parent, [folder / "summary.json", *sorted(folder.glob("*.csv"))])
    lg.end(parent)
    return parent


def _log_report(lg: _Logger, w: Workdir, name: str, files: list[Path]) -> str:
    run_id = lg.start(f"report:{name}", "report")
    for f in files:
        rel = f.parent.relative_to(w.report(name)).as_posix()
        lg.file(run_id, f, None if rel == "." else rel)
    lg.end(run_id)
    return run_id


def _source_files(w: Workdir, source: str) -> tuple[str, str, list[Path]]:
    """``(kind, name, files whose bytes define the source)``; a missing source is a ValueError."""
    kind, _, name = source.partition(":") if source.startswith(("tune:", "ensemble:", "report:")) else ("run", "", source)
    if kind == "run":
        files = [w.run_record(name), w.run_settings(name)]
        if not files[0].exists():
            raise ValueError(f"track {source!r}: no run record {files[0]} (runs are folders under {w.runs_dir})")
    elif kind == "tune":
        files = [w.tune_best(name), w.tune_leaderboard(name), *sorted(w.tune_trials(name).glob("*.json"))]
        if not w.tune_trials(name).is_dir():
            raise ValueError(f"track {source!r}: no trial records under {w.tune_trials(name)} (run `serray tune` first)")
    elif kind == "report":
        files = sorted(p for p in w.report(name).rglob("*") if p.is_file())
        if not files:
            raise ValueError(f"track {source!r}: no report files under {w.report(name)} (run `serray report` first)")
    else:
        files = [w.ensemble(name) / "summary.json", *sorted(w.ensemble(name).glob("*.csv"))]
        if not files[0].exists():
            raise ValueError(f"track {source!r}: no {files[0]} (run `serray ensemble --name {name}` first)")
    return kind, name, files


def _already(client: "MlflowClient", exp_id: str, source: str) -> list[Any]:
    return client.search_runs([exp_id], filter_string=f"tags.serray_source = '{source}'", max_results=50000)


def _store(target: TrackTarget, workdir: str | Path) -> Any:
    if target.kind == "wandb":
        check_available(target)
        from serray.tracking_wandb import WandbStore

        return WandbStore(workdir, target.experiment)
    return _MlflowStore(target)


def track(workdir: str | Path, sources: Iterable[str], target: TrackTarget) -> list[Tracked]:
    """Log each source (``RUN``, ``tune:EXPERIMENT``, ``ensemble:NAME``, ``report:NAME``) to the tracker.

    A source whose files are unchanged since it was last logged is not logged again; one
    whose files changed replaces its earlier runs. Every source is checked before
    anything is logged, so a misspelt name logs nothing.
    """
    w = Workdir(workdir)
    plan = [(s, *_source_files(w, s)) for s in sources]
    store = _store(target, workdir)
    out = []
    for source, kind, name, files in plan:
        digest = _digest(files)
        root, digests = store.previous(source)
        if root is not None and digests == {digest}:
            out.append(Tracked(source, root, "unchanged", store.label))
            continue
        store.remove(source)
        lg = store.logger(source, digest)
        if kind == "run":
            run_id = _log_train_run(lg, io.read_json(files[0]), name, [f for f in files if f.exists()])
        elif kind == "tune":
            run_id = _log_tune(lg, w, name)
        elif kind == "report":
            run_id = _log_report(lg, w, name, files)
        else:
            run_id = _log_ensemble(lg, w, name)
        store.commit(lg, run_id)
        out.append(Tracked(source, run_id, "replaced" if digests else "logged", store.label))
        log.info("tracked %s -> %s run %s (%s)", source, target.uri, run_id, out[-1].action)
    return out
