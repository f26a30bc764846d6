"""``serray export --refit all-data``: one model per member, retrained on every training utterance.

An export normally holds the kept fold models (one per fold, per configuration and seed).
With ``--refit all-data`` each member (a configuration and seed of a run) is trained once
more, through the fold executor (:func:`serray.training.executor.run_folds`), on one
"fold" (:func:`all_data_fold`) whose training part is the union of the run's folds'
training and validation parts and which has no validation and no test part:

* the data are rebuilt from the run's settings (``W/runs/<run>/settings.json``: corpora,
  label set, protocol, features and their parameters, normalisation) by
  :func:`serray.training.experiment.prepare_experiment`, the function the run itself
  used, and checked against the run's fold table (``folds.parquet``) where it has one;
  for LOSO and k-fold protocols the union is every utterance, for ``cross-corpus`` only
  the training corpora (the test corpus stays unseen);
* torch members train for :func:`refit_epochs` epochs (the median of the folds' best,
  early-stopped epochs) with no early stopping; scikit-learn members are fitted once;
* a multi-stage plan (``stages``, e.g. nhnn's DCNN then group heads) trains each stage for
  its own count (:func:`refit_stage_epochs`): the median over folds of the epochs that
  stage handed on (its best epoch counted from the stage's start, or all its epochs where
  nothing selected among them); the plan is written out with those counts
  (``all-heads@6;heads@3``). A stage whose median is 0 (it improved on the earlier
  stages' validation score in fewer than half of the folds) is refused: keeping or
  dropping it is a choice only a validation part can make. A model's own selection by
  validation inside a stage (nhnn's per-group heads) is replaced by the stage's count;
* a search's trials (``serray tune --keep-models``, ``W/models/<experiment>``) refit from
  the search's settings (``W/tune/<experiment>/serray_search.json``) with the trial's
  config as its fold models recorded it; population-based searches are refused;
* the normalisation statistics come from all of that training data (``speaker``
  normalisation stays transductive at prediction time, as for fold models);
* the same seed gives bit-identical weights on CPU (the trainer's seeded generators).

The per-fold best epochs are read from the kept fold models' ``model.json``
(``training.best_epoch``, ``training.stage_best_epochs``) or, for a ``serray train`` run
kept before they were recorded, from its ``record.json`` (fold metrics and histories).

Example:
    >>> refit_epochs([3, 4, 8])
    4
    >>> refit_epochs([3, 4])
    4
    >>> refit_epochs([0, 0])
    1
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from serray.artifacts.fold_model import MODEL_FILE, write_fold_model
from serray.workdir import Workdir

__all__ = ["REFIT_MODES", "REFIT_DIR", "REFIT_FOLD_INDEX", "Member", "refit_epochs", "all_data_fold", "group_members",
           "fold_best_epochs", "refit_stage_epochs", "fold_stage_epochs", "plan_member", "refit_member", "refit_members"]

log = logging.getLogger(__name__)

#: Values of ``serray export --refit``.
REFIT_MODES: tuple[str, ...] = ("none", "all-data")
#: Folder of a refit member's model: ``members/<run>/<config>__seed<s>/refit``.
REFIT_DIR = "refit"
#: The fold index recorded in a refit model's ``model.json`` (no cross-validation fold).
REFIT_FOLD_INDEX = -1
#: How a member's epoch count was chosen (``epochs_rule`` in export.json).
_EPOCHS_RULE = {"fold": "median of the folds' best epochs, rounded half up",
                "stage": "per stage, the median over folds of the epochs the stage handed on, rounded half up",
                "fit": "one fit (scikit-learn)"}
#: Settings a refit needs from ``W/runs/<run>/settings.json``.
DATA_SETTINGS = ("features", "protocol", "labels", "normalize", "k", "fold_seed", "validation", "corpora")


def refit_epochs(best_epochs: Sequence[int]) -> int:
    """The median of the folds' best epochs, rounded half up, at least 1.

    Raises:
        ValueError: No epochs.
    """
    if not len(best_epochs):
        raise ValueError("refit_epochs needs the best epoch of at least one fold")
    return max(1, _median_half_up(best_epochs))


def _median_half_up(values: Sequence[int]) -> int:
    """The median of ``values``, rounded half up (3.5 -> 4)."""
    return int(math.floor(float(np.median(np.asarray(values, dtype=np.float64))) + 0.5))


def all_data_fold(folds: Sequence[Any], order: Sequence[str]) -> Any:
    """One fold whose training part is every utterance of ``folds``' training and validation
    parts (in ``order``, the run's utterance order), without validation or test part."""
    from serray.protocols import Fold

    seen = {str(u) for f in folds for part in (f.train, f.validation) for u in part}
    train = [str(u) for u in order if str(u) in seen]
    mode = folds[0].validation_mode if folds else "speaker"
    return Fold(REFIT_FOLD_INDEX, "all-data", np.asarray(train, dtype=object), np.asarray([], dtype=object),
                np.asarray([], dtype=object), mode)


@dataclass
class Member:
    """One configuration and seed of a run, and the folders of its kept fold models."""

    run: str
    config_id: str
    seed: int
    folds: list[Path]

    @property
    def name(self) -> str:
        """``<run>/<config>/<seed>``, as ensemble searches name members."""
        return f"{self.run}/{self.config_id}/{self.seed}"

    @property
    def folder(self) -> Path:
        """Where the refit model goes in the export: ``members/<run>/<config>__seed<s>/refit``."""
        return Path("members") / self.run / f"{self.config_id}__seed{self.seed}" / REFIT_DIR


def group_members(w: Workdir, folders: Sequence[Path]) -> list[tuple[Member, int]]:
    """Kept fold model folders (``W/models/<run>/<config>__seed<s>/fold<k>``) grouped per member,
    with how often the member is listed (a greedy ensemble may pick a member several times:
    its logits then count that many times in the fusion)."""
    groups: dict[tuple[str, str, int], list[Path]] = {}
    for folder in folders:
        run, kept = folder.relative_to(w.models_dir).parts[:2]
        cid, _, seed = kept.rpartition("__seed")
        groups.setdefault((run, cid, int(seed)), []).append(folder)
    return [(Member(run, cid, seed, sorted(set(fs))), len(fs) // len(set(fs))) for (run, cid, seed), fs in groups.items()]


def _settings(w: Workdir, member: Member) -> dict[str, Any]:
    """The run's settings (``settings.json``, else its record's, else a search's
    :data:`~serray.tune.state.SEARCH_FILE` with the trial's config), checked for what a refit needs."""
    run = member.run
    path = w.run_settings(run)
    if path.is_file():
        settings = json.loads(path.read_text())
    elif w.run_record(run).is_file():
        record = json.loads(w.run_record(run).read_text())
        settings = dict(record.get("settings") or {})
    elif _search_file(w, run).is_file():
        settings = _search_settings(w, member)
    else:
        raise ValueError(f"run {run!r} has no {path.name} under {w.run(run)} nor search settings "
                         f"{_search_file(w, run)}: a refit needs the run's data settings (serray train, serray seeds "
                         f"and serray tune with its default storage write them); or export without --refit")
    missing = [k for k in (*DATA_SETTINGS, "config", "config_id") if k not in settings]
    if missing:
        raise ValueError(f"run {run!r}: its settings lack {missing}, which a refit needs; train it again with this "
                         f"serray version, or export without --refit")
    return settings


def _search_file(w: Workdir, experiment: str) -> Path:
    from serray.tune.state import SEARCH_FILE

    return w.tune(experiment) / SEARCH_FILE


def _search_settings(w: Workdir, member: Member) -> dict[str, Any]:
    """A search's data settings with the trial's own config (as its fold models recorded it).

    Raises:
        ValueError: A population-based search (its trials went on from other trials' weights).
    """
    settings = json.loads(_search_file(w, member.run).read_text())
    if settings.get("scheduler", "asha") == "pbt":
        raise ValueError(f"member {member.name}: search {member.run!r} is population-based (its trials went on from "
                         f"other trials' weights and configs), which a retraining cannot replay; export without --refit")
    config = json.loads((member.folds[0] / MODEL_FILE).read_text())["config"]
    return {**settings, "config": dict(config), "config_id": member.config_id}


def _run_spec(w: Workdir, model: str, settings: Mapping[str, Any], seed: int) -> Any:
    """The :class:`~serray.training.spec.RunSpec` that makes the run's data selection again."""
    from serray.training.spec import RunSpec

    s = settings
    return RunSpec(str(w.root), model, features=s["features"], feature_params=dict(s.get("feature_params") or {}) or None,
                   protocol=s["protocol"], labels=s["labels"], normalize=s["normalize"], corpora=s["corpora"],
                   k=int(s["k"]), fold_seed=int(s["fold_seed"]), validation=s["validation"],
                   train_corpora=s.get("train_corpora"), test_corpora=s.get("test_corpora"), config=dict(s["config"]),
                   seed=int(seed))


def _record(w: Workdir, member: Member) -> dict[str, Any]:
    """A ``serray train`` run's record when it is of this member's config and seed, else ``{}``."""
    path = w.run_record(member.run)
    record = json.loads(path.read_text()) if path.is_file() else {}
    return record if record.get("config_id") == member.config_id and record.get("seed") == member.seed else {}


def _record_epochs(w: Workdir, member: Member) -> dict[int, int]:
    """Fold -> best epoch from a ``serray train`` run's record (of this config and seed), else ``{}``."""
    return {int(f["fold"]): int(f["best_epoch"]) for f in (_record(w, member).get("metrics") or {}).get("folds", [])
            if f.get("best_epoch") is not None}


def _fold_values(member: Member, key: str, fallback: Callable[[int], Any], what: str) -> dict[int, Any]:
    """Fold index -> ``training[key]`` of each kept fold model's ``model.json``, else ``fallback(fold)``.

    Raises:
        ValueError: A fold with neither, naming ``what`` is missing and what to do.
    """
    out, missing = {}, []
    for folder in member.folds:
        meta = json.loads((folder / MODEL_FILE).read_text())
        fold = int(meta["fold"]["index"])
        value = (meta.get("training") or {}).get(key)
        value = fallback(fold) if value is None else value
        if value is None:
            missing.append(fold)
        else:
            out[fold] = value
    if missing:
        raise ValueError(f"member {member.name}: no recorded {what} for fold(s) {missing} (its kept models predate "
                         f"them); train it again (serray train / serray seeds keep them), or export without --refit")
    return out


def fold_best_epochs(w: Workdir, member: Member) -> dict[int, int]:
    """Fold index -> best (early-stopped) epoch of the member's kept fold models (``training.best_epoch``
    of ``model.json``, else from its ``serray train`` record).

    Raises:
        ValueError: A fold without a recorded best epoch, naming what to do.
    """
    record = functools.cache(lambda: _record_epochs(w, member))
    found = _fold_values(member, "best_epoch", lambda fold: record().get(fold), "best epoch")
    return {fold: int(best) for fold, best in found.items()}


def refit_stage_epochs(per_fold: Mapping[int, Sequence[int]], n_stages: int) -> list[int]:
    """Per stage, the median over folds of the epochs the stage handed on
    (:func:`serray.artifacts.keep.stage_best_epochs`; a stage a fold never reached counts
    0), rounded half up.

    Example:
        >>> refit_stage_epochs({0: [4, 2], 1: [6, 1], 2: [5]}, 2)
        [5, 1]
    """
    folds = [list(e) + [0] * (n_stages - len(e)) for e in per_fold.values()]
    return [_median_half_up([f[i] for f in folds]) for i in range(n_stages)]


def fold_stage_epochs(w: Workdir, member: Member) -> dict[int, list[int]]:
    """Fold index -> per-stage epochs of the member's kept fold models (``training.stage_best_epochs``
    of ``model.json``, else from the history in its ``serray train`` record).

    Raises:
        ValueError: A fold without them, naming what to do.
    """
    from serray.artifacts.keep import stage_best_epochs

    history = functools.cache(lambda: _record(w, member).get("history") or {})
    found = _fold_values(member, "stage_best_epochs",
                         lambda fold: stage_best_epochs(history().get(str(fold)) or []) or None, "epochs per stage")
    return {fold: [int(e) for e in stages] for fold, stages in found.items()}


def _stage_plan(spec: Any, config: Mapping[str, Any], member: Member, w: Workdir) -> dict[str, Any]:
    """A multi-stage torch member's per-stage epochs (:func:`refit_stage_epochs`), or ``{}``.

    Raises:
        ValueError: A stage whose median is 0 (it rarely improved on the earlier stages'
            validation score, so which of its epochs to keep needs a validation part).
    """
    from serray.models.contract import parse_stages

    stages = parse_stages(str(config.get("stages", "all")), None, spec.stage_plans) if spec.backend == "torch" else []
    if len(stages) < 2:
        return {}
    per_fold = fold_stage_epochs(w, member)
    medians = refit_stage_epochs(per_fold, len(stages))
    zero = [i + 1 for i, e in enumerate(medians) if e < 1]
    if zero:
        raise ValueError(f"member {member.name}: stage(s) {zero} of {config.get('stages')!r} improved the validation "
                         f"score in fewer than half of the folds (their median epoch count is 0), so whether to keep "
                         f"them cannot be replayed without a validation part; export without --refit")
    return {"stages": stages, "stage_epochs": medians,
            "fold_stage_epochs": {str(k): v for k, v in sorted(per_fold.items())}}


def _check_folds(w: Workdir, run: str, folds: Sequence[Any]) -> None:
    """Refuse folds rebuilt from the settings that differ from the run's ``folds.parquet`` (when it has one)."""
    path = w.run_folds(run)
    if not path.is_file():
        return
    import pandas as pd

    from serray.protocols import folds_from_frame

    stored = {f.index: f for f in folds_from_frame(pd.read_parquet(path))}
    for fold in folds:
        old = stored.get(fold.index)
        same = old is not None and all(set(map(str, getattr(old, p))) == set(map(str, getattr(fold, p)))
                                       for p in ("train", "validation", "test"))
        if not same or len(stored) != len(folds):
            raise ValueError(f"run {run!r}: the folds rebuilt from its settings differ from {path} (fold {fold.index}); "
                             f"the manifests or feature cache changed since the run; restore them, or export without --refit")


def _experiment(w: Workdir, member: Member, settings: Mapping[str, Any], spec: Any) -> Any:
    """The run's data, made again as the run made them (:func:`prepare_experiment`), checked."""
    from serray.features.cache import FeaturesNotExtractedError
    from serray.training.experiment import prepare_experiment

    run = _run_spec(w, spec.name, settings, member.seed)
    try:
        exp = prepare_experiment(run, dict(settings["config"]), extract=False)
    except FeaturesNotExtractedError as exc:
        raise ValueError(f"run {member.run!r}: {exc}; extract the run's features again (serray features) first") from None
    tag = settings.get("feature_tag")
    if tag is not None and tag != exp.feature_tag:
        raise ValueError(f"run {member.run!r}: the feature cache changed since the run (feature tag {tag} -> "
                         f"{exp.feature_tag}); extract the features as the run had them, or export without --refit")
    _check_folds(w, member.run, exp.folds)
    return run, exp


def _refit_config(spec: Any, config: Mapping[str, Any], epochs: int | None, stages: Sequence[Any] = (),
                  stage_epochs: Sequence[int] = ()) -> dict[str, Any]:
    """Torch: ``epochs`` epochs without early stopping (and no in-fold refit), a multi-stage
    plan written out with each stage's ``stage_epochs`` (``body@E*lr``); scikit-learn: as is."""
    if spec.backend != "torch":
        return dict(config)
    out = {**dict(config), "epochs": int(epochs or 1), "patience": 0}
    if stages:
        out["stages"] = ";".join(f"{s.train[0]}@{int(e)}" + (f"*{s.lr_scale!r}" if s.lr_scale != 1.0 else "")
                                 for s, e in zip(stages, stage_epochs))
    if out.get("refit"):
        out["refit"] = False
    return out


def plan_member(w: Workdir, member: Member) -> dict[str, Any]:
    """What a refit of ``member`` needs, checked before any training: the run's settings, the
    model's registry entry and (torch) the folds' best epochs and the epoch count; for a
    multi-stage plan also ``stages``, ``stage_epochs`` (per stage) and ``fold_stage_epochs``.

    Raises:
        ValueError: A run without settings or of another config, a member without recorded
            best epochs, or a multi-stage plan with a stage it cannot replay (each naming
            what to do).
    """
    from serray.models import registry

    settings = _settings(w, member)
    if settings["config_id"] != member.config_id:
        raise ValueError(f"member {member.name}: run {member.run!r} holds config {settings['config_id']}, not "
                         f"{member.config_id}; export without --refit")
    spec = registry.get(json.loads((member.folds[0] / MODEL_FILE).read_text())["model"])
    staged = _stage_plan(spec, settings["config"], member, w)
    best = fold_best_epochs(w, member) if spec.backend == "torch" else {}
    epochs = sum(staged["stage_epochs"]) if staged else refit_epochs(list(best.values())) if best else None
    return {"settings": settings, "spec": spec, "best": best, "epochs": epochs, **staged}


def refit_member(w: Workdir, member: Member, plan: Mapping[str, Any], out: Path, resources: Any = None) -> dict[str, Any]:
    """Train one member (its :func:`plan_member`) on all its run's training data through the
    fold executor (in this process by default) and write its model to ``out / member.folder``;
    returns what export.json records.

    Raises:
        ValueError: Features not extracted, or data that changed since the run.
    """
    from serray.artifacts.keep import feature_inputs
    from serray.training.executor import run_folds
    from serray.training.resources import Resources

    settings, spec, best, epochs = plan["settings"], plan["spec"], plan["best"], plan["epochs"]
    run, exp = _experiment(w, member, settings, spec)
    fold = all_data_fold(exp.folds, exp.manifest["utt_id"].astype(str).tolist())
    t0 = time.perf_counter()
    config = _refit_config(spec, settings["config"], epochs, plan.get("stages", ()), plan.get("stage_epochs", ()))
    result = run_folds(spec, config, exp.inputs, [fold], normalize=run.normalize,
                       seed=member.seed, resources=resources or Resources(parallel=False), keep_models=True)[0]
    rows = exp.manifest.set_index("utt_id").loc[list(fold.train)]
    info = {"member": member.name, "model": spec.name, "config_id": member.config_id, "seed": member.seed,
            "epochs": epochs, "epochs_trained": int(result.epochs),
            "fold_best_epochs": {str(k): v for k, v in sorted(best.items())},
            **({k: plan[k] for k in ("stage_epochs", "fold_stage_epochs")} if "stage_epochs" in plan else {}),
            "epochs_rule": _EPOCHS_RULE["stage" if "stage_epochs" in plan else "fold" if epochs else "fit"],
            "n_utterances": len(fold.train), "n_held_out": int(len(exp.manifest) - len(fold.train)),
            "n_fit": int(result.n_train), "n_speakers": int(rows["speaker"].nunique()),
            "corpora": sorted(rows["corpus"].astype(str).unique().tolist()), "protocol": run.protocol,
            "seconds": round(time.perf_counter() - t0, 3)}
    log.info("refit %s: %s on %d utterances of %d speakers (%s) in %.1f s", member.name,
             f"{epochs} epoch(s)" if epochs else "one fit", info["n_utterances"], info["n_speakers"],
             ", ".join(info["corpora"]), info["seconds"])
    write_fold_model(out / member.folder, result.kept, feature_inputs(exp.features, run.params_for), run=member.run,
                     training={"refit": "all-data", **{k: info[k] for k in ("epochs", "fold_best_epochs", "stage_epochs",
                                                                             "n_utterances", "n_speakers", "corpora") if k in info}})
    return info


def refit_members(workdir: str | Path, folders: Sequence[Path], out: str | Path,
                  progress: Callable[[str], None] | None = None, resources: Any = None) -> tuple[list[str], dict[str, Any]]:
    """Refit every member of the kept fold models ``folders`` into ``out``; ``(member folders
    relative to out, as often as the member is listed, member name -> what
    :func:`refit_member` recorded)``."""
    w, out = Workdir(workdir), Path(out)
    members = group_members(w, folders)
    plans = [plan_member(w, m) for m, _ in members]  # every member checked before any training
    folders_out, infos = [], {}
    for i, ((member, times), plan) in enumerate(zip(members, plans), 1):
        if progress is not None:
            progress(f"refit {i}/{len(members)}: {member.name} on all training data ...")
        info = refit_member(w, member, plan, out, resources)
        if progress is not None:
            epochs = f"{info['epochs']} epoch(s)" if info["epochs"] else "one fit"
            progress(f"refit {i}/{len(members)}: {member.name} done: {info['model']}, {epochs}, {info['n_utterances']} "
                     f"utterances of {info['n_speakers']} speakers, {info['seconds']:.1f} s")
        folders_out += [member.folder.as_posix()] * times
        infos[member.name] = {**info, "times": times} if times > 1 else info
    return folders_out, infos
