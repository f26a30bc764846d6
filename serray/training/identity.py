"""Run identity: the settings that change a run's numbers, and the check that a run
folder never holds results of two settings.

A run's *settings* (:func:`run_settings`) are everything that changes its predictions:
model, resolved config (and its ``config_id``), feature sets and their parameters (the
feature tag fingerprints the feature cache), protocol and its options (``k`` for the
k-fold protocols, fold seed, validation rule, the corpora actually trained on, train and
test corpora of ``cross-corpus``), label set and normalisation, and for ``serray train``
the training seed. They are written to ``W/runs/<run>/settings.json`` before any
training, and into the run record.

Default run names carry :func:`settings_hash` of the settings their text does not spell,
so runs of other settings get other names. A run given by name (``train --run``,
``seeds --run-prefix``) whose folder already holds results (predictions parts or a
record) of other settings is refused by :func:`check_run` before any training, naming
the differing settings (old -> new). Runs written before ``settings.json`` existed are
compared on the settings their ``record.json`` holds.

Example:
    >>> a = {"model": "svm", "protocol": "kfold", "k": 2, "fold_seed": 0}
    >>> settings_hash(a) != settings_hash({**a, "k": 4})
    True
    >>> differences({**a, "protocol": "loso"}, {**a, "protocol": "loso", "k": 4})   # k means nothing for loso
    []
    >>> differences(a, {**a, "k": 4})
    ['k: 2 -> 4']
    >>> t = {**a, "feature_tag": "ssl-1a2b3c"}
    >>> differences({**t, "feature_params": {"model": "m"}}, {**t, "feature_params": {"model": "m/"}})
    []
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

from serray.workdir import Workdir

__all__ = ["SETTINGS_FILE", "run_settings", "settings_hash", "differences", "stored_settings", "check_run",
           "write_settings", "KFOLD_PROTOCOLS"]

log = logging.getLogger(__name__)

#: The file name of ``W/runs/<run>/settings.json`` (:meth:`serray.workdir.Workdir.run_settings`).
SETTINGS_FILE = Workdir(".").run_settings("run").name
#: Protocols whose folds depend on ``k``.
KFOLD_PROTOCOLS = ("kfold", "kfold-speaker-dependent")
#: Settings compared as a whole and only shown through their parts (``config.lr``).
_NESTED = ("config", "feature_params")


def run_settings(run: Any, exp: Any, model: str, config: Mapping[str, Any], cid: str,
                 seed: int | None = None) -> dict[str, Any]:
    """The settings of a run of ``run`` (a RunSpec) prepared as ``exp`` (an Experiment).

    ``seed`` is given for a single-seed run (``serray train``), left out for seed runs
    (whose folders hold many seeds of one setting).
    """
    out = {
        "model": model,
        "config": dict(config),
        "config_id": cid,
        "features": run.features_text(),
        "feature_tag": exp.feature_tag,
        "feature_params": dict(run.feature_params or {}),
        "protocol": run.protocol,
        "labels": run.labels,
        "normalize": run.normalize,
        "k": int(run.k),
        "fold_seed": int(run.fold_seed),
        "validation": run.validation,
        "corpora": sorted(str(c) for c in exp.manifest["corpus"].unique()),
        "train_corpora": sorted(run.train_corpora) if run.train_corpora else None,
        "test_corpora": sorted(run.test_corpora) if run.test_corpora else None,
    }
    if seed is not None:
        out["seed"] = int(seed)
    return json.loads(json.dumps(out, default=str))  # as it reads back from JSON


def _relevant(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without what does not change the numbers (``k`` outside k-fold protocols;
    the feature parameters as typed where the feature tag, which fingerprints what they
    select, is there: ``model=./m`` and ``model=/abs/m/`` are the same features)."""
    out = dict(settings)
    if out.get("protocol") is not None and out["protocol"] not in KFOLD_PROTOCOLS:
        out.pop("k", None)
    if "feature_tag" in out:
        out.pop("feature_params", None)
    return out


def settings_hash(settings: Mapping[str, Any], leave_out: tuple[str, ...] = ()) -> str:
    """Short stable hash (6 hex digits) of ``settings`` without the keys in ``leave_out``
    (those a run name spells already)."""
    what = {k: v for k, v in _relevant(settings).items() if k not in leave_out}
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:6]


def _flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in _relevant(settings).items():
        if key in _NESTED and isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
            out[f"{key}:keys"] = None  # present, so that a key missing on one side is a difference
        else:
            out[key] = value
    return out


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every setting both sides know and that differs (a config
    or feature-parameter key on one side only shows as ``absent``); ``config_id`` only
    when no config key differs."""
    a, b = _flat(old), _flat(new)
    out = []
    for key in [k for k in b if k in a or k.partition(".")[0] in _NESTED]:
        if key.endswith(":keys") or key == "config_id":
            continue
        scope = key.partition(".")[0]
        if "." in key and f"{scope}:keys" not in a:
            continue  # an old record without this setting
        if a.get(key, "absent") != b[key]:
            out.append(f"{key}: {_show(a.get(key, 'absent'))} -> {_show(b[key])}")
    for key in [k for k in a if "." in k and k not in b and f"{k.partition('.')[0]}:keys" in b]:
        out.append(f"{key}: {_show(a[key])} -> absent")
    if not any(d.startswith("config.") for d in out) and a.get("config_id", b.get("config_id")) != b.get("config_id"):
        out.append(f"config_id: {a['config_id']} -> {b['config_id']}")
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _parts(workdir: Any, run_name: str) -> list[tuple[str, int]]:
    """``(config_id, seed)`` of every predictions part of the run."""
    out = []
    for p in sorted(Workdir(workdir).predictions(run_name).glob("*__seed*.parquet")):
        cid, _, seed = p.stem.rpartition("__seed")
        if seed.isdigit():
            out.append((cid, int(seed)))
    return out


def stored_settings(workdir: Any, run_name: str) -> dict[str, Any] | None:
    """The settings a run folder holds results of: its ``settings.json``, else (a run
    written before it existed) the settings its ``record.json`` names; ``None`` when the
    run holds no results (no predictions part and no record)."""
    from serray import io

    w = Workdir(workdir)
    settings, record = w.run_settings(run_name), w.run_record(run_name)
    if not _parts(workdir, run_name) and not record.exists():
        return None
    if settings.exists():
        return dict(io.read_json(settings))
    if record.exists():
        data = io.read_json(record)
        return dict(data.get("settings") or data)
    return {}


def check_run(workdir: Any, run_name: str, settings: Mapping[str, Any], option: str) -> None:
    """Refuse (``ValueError``, one line) when run ``run_name`` holds results of other settings.

    Besides the stored settings, the predictions parts are checked: a part of another
    config (or, for a single-seed run, of another seed) is a difference too.

    Args:
        option: The option that names the run (``--run``, ``--run-prefix``), for the fix.
    """
    stored = stored_settings(workdir, run_name)
    if stored is None:
        return
    diff = differences(stored, settings)
    parts = _parts(workdir, run_name)
    other_cids = sorted({c for c, _ in parts} - {settings.get("config_id")})
    if other_cids and not any(d.startswith(("config.", "config_id")) for d in diff):
        diff.append(f"config_id: {','.join(other_cids)} -> {settings.get('config_id')}")
    if "seed" in settings and not any(d.startswith("seed:") for d in diff):
        other_seeds = sorted({s for _, s in parts} - {settings["seed"]})
        if other_seeds:
            diff.append(f"seed: {','.join(map(str, other_seeds))} -> {settings['seed']}")
    if diff:
        w = Workdir(workdir)
        raise ValueError(
            f"run {run_name!r} already holds results of other settings ({'; '.join(diff)}); pass another {option}, "
            f"or delete {w.run(run_name)} and {w.predictions(run_name)} to replace it"
        )


def write_settings(workdir: Any, run_name: str, settings: Mapping[str, Any]) -> Path:
    """Write ``W/runs/<run>/settings.json`` (atomically; before training, after :func:`check_run`)."""
    from serray import io

    path = Workdir(workdir).run_settings(run_name)
    io.write_json(dict(settings), path)
    return path
