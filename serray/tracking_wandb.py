"""Weights & Biases as a tracker of :mod:`serray.tracking` (``--track wandb[:PROJECT]``).

serray logs W&B runs in offline mode into the work directory (``W/tracking/wandb``, one
``offline-run-*`` folder per run; no server and no account needed); ``wandb sync
W/tracking/wandb/offline-run-*`` uploads them later to a W&B server, under ``PROJECT``
(default ``serray``). W&B has no nested runs, so a serray source is a **group** (the
source, e.g. ``svm-emodb`` or ``tune:mlp``) and each run's **job type** says what it is
(``run``, ``fold``, ``seed``, ``tune``, ``trial``, ``ensemble``, ``report``), as W&B's
Ray Tune integration groups a search's trials. Each run's config holds the serray params
(nested as in the record), ``serray_source``, ``serray_kind``, ``serray_digest``,
``serray_parent`` (the id of the run it belongs to, e.g. a fold's trial) and, for
transductive or optimistic results, ``serray_caveat``. Summary metrics go to the run's
summary, per-epoch curves to its history (step = epoch), records and report files into
its files.

Which sources were logged, with which content digest and into which folders, is kept in
``W/tracking/wandb/serray-index.json``: an unchanged source is not logged again, a
changed one replaces its offline runs (the old folders are removed before they are ever
synced). Read the offline runs back with W&B's own reader: ``wandb leet inspect --json
RUN_FOLDER`` (:func:`read_offline_run`).

Example:
    >>> run_id("svm-emodb", "0a1b2c", "svm-emodb fold 3") == run_id("svm-emodb", "0a1b2c", "svm-emodb fold 3")
    True
    >>> len(run_id("svm-emodb", "0a1b2c", "x"))
    8
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from serray import io
from serray.workdir import Workdir

__all__ = ["WandbStore", "WandbLogger", "check_wandb", "run_id", "read_offline_run"]

log = logging.getLogger(__name__)

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def check_wandb() -> None:
    """Raise ``ValueError`` naming the extra to install when ``wandb`` cannot be imported."""
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise ValueError("--track wandb needs Weights & Biases: pip install 'serray[wandb]' (or wandb)") from exc


def run_id(source: str, digest: str, name: str) -> str:
    """A W&B run id (8 characters of ``[0-9a-z]``) fixed by the source, its content digest and the run's name."""
    n = int.from_bytes(hashlib.sha256(f"{source}\0{digest}\0{name}".encode()).digest()[:8], "big")
    out = []
    for _ in range(8):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)


def _typed(text: str) -> Any:
    """A param's text as the JSON value it spells (``"0.01"`` -> 0.01, ``"[64, 32]"`` -> list), else the text."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _nested(params: Mapping[str, str]) -> dict[str, Any]:
    """``{"config.lr": "0.01"}`` -> ``{"config": {"lr": 0.01}}`` (a key clashing with a prefix stays flat)."""
    out: dict[str, Any] = {}
    for key, text in params.items():
        *heads, leaf = key.split(".")
        node = out
        for h in heads:
            nxt = node.setdefault(h, {})
            if not isinstance(nxt, dict):
                node, leaf = out, key
                break
            node = nxt
        node[leaf] = _typed(text)
    return out


def _steps(curves: Mapping[str, list[float]]) -> list[dict[str, float]]:
    """Curves -> one row per step (step i+1 holds each curve's i-th finite value)."""
    rows: list[dict[str, float]] = []
    for key, curve in curves.items():
        for i, v in enumerate(curve):
            while len(rows) <= i:
                rows.append({})
            if v is not None and v == v and abs(float(v)) != float("inf"):
                rows[i][key] = float(v)
    return rows


class WandbLogger:
    """Collects one source's runs (:mod:`serray.tracking`'s logger interface) and writes each W&B run at its end."""

    def __init__(self, store: "WandbStore", source: str, digest: str) -> None:
        self.store, self.source, self.digest = store, source, digest
        self.pending: dict[str, dict[str, Any]] = {}
        self.folders: list[str] = []

    def start(self, name: str, kind: str, parent: str | None = None, caveat: str | None = None) -> str:
        rid = run_id(self.source, self.digest, name)
        meta = {"serray_source": self.source, "serray_kind": kind, "serray_digest": self.digest}
        meta.update({k: v for k, v in (("serray_parent", parent), ("serray_caveat", caveat)) if v})
        self.pending[rid] = {"name": name, "kind": kind, "meta": meta, "params": {}, "metrics": {}, "steps": {}, "files": []}
        return rid

    def log(self, run_id: str, params: Mapping[str, str] | None = None, metrics: Mapping[str, float] | None = None,
            steps: Mapping[str, list[float]] | None = None) -> None:
        run = self.pending[run_id]
        run["params"].update(params or {})
        run["metrics"].update(metrics or {})
        run["steps"].update(steps or {})

    def files(self, run_id: str, paths: Iterable[Path]) -> None:
        self.pending[run_id]["files"] += [(Path(p), None) for p in paths if Path(p).is_file()]

    def file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        """One file, stored under ``folder`` of the run's files (``None``: at the top)."""
        self.pending[run_id]["files"].append((Path(path), folder))

    def end(self, run_id: str) -> None:
        """Write the run: ``wandb.init`` (offline), its history, summary and files, ``finish``."""
        import wandb

        spec = self.pending.pop(run_id)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False, disable_git=True,
                                  x_save_requirements=False, x_disable_meta=True, disable_job_creation=True)
        run = wandb.init(mode="offline", dir=str(self.store.workdir.tracking_dir), project=self.store.project, id=run_id,
                         name=spec["name"], group=self.source, job_type=spec["kind"], tags=[spec["kind"]],
                         config={**_nested(spec["params"]), **spec["meta"]}, reinit="create_new", settings=settings)
        try:
            for step, row in enumerate(_steps(spec["steps"]), start=1):
                run.log(row, step=step)
            run.summary.update(spec["metrics"])
            for path, folder in spec["files"]:
                dest = Path(run.dir) / (folder or "") / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
                run.save(str(dest), base_path=run.dir, policy="now")
        finally:
            run.finish()
        self.folders.append(Path(run.dir).parent.name)


class WandbStore:
    """The offline W&B store of a work directory for one project: what is logged there, and its removal."""

    label = "W&B"

    def __init__(self, workdir: str | os.PathLike, project: str) -> None:
        self.workdir, self.project = Workdir(workdir), project
        self.index_path = self.workdir.wandb_dir / "serray-index.json"

    def _index(self) -> dict[str, Any]:
        return io.read_json(self.index_path) if self.index_path.exists() else {}

    def previous(self, source: str) -> tuple[str | None, set[str]]:
        """``(root run id, digests)`` of the source's earlier runs in this project (``(None, set())``: none)."""
        entry = self._index().get(self.project, {}).get(source)
        if not entry:
            return None, set()
        present = all((self.workdir.wandb_dir / d).is_dir() for d in entry["folders"])
        return (entry["root"], {entry["digest"]}) if present else (entry["root"], {""})

    def remove(self, source: str) -> None:
        """Delete the source's earlier offline runs (folders and index entry)."""
        index = self._index()
        entry = index.get(self.project, {}).pop(source, None)
        for folder in (entry or {}).get("folders", []):
            shutil.rmtree(self.workdir.wandb_dir / folder, ignore_errors=True)
        if entry:
            io.write_json(index, self.index_path)

    def logger(self, source: str, digest: str) -> WandbLogger:
        return WandbLogger(self, source, digest)

    def commit(self, lg: WandbLogger, root: str) -> None:
        """Record the source's runs in the index once all were written."""
        index = self._index()
        index.setdefault(self.project, {})[lg.source] = {"digest": lg.digest, "root": root, "folders": lg.folders}
        io.write_json(index, self.index_path)

    def folder(self, source: str) -> list[Path]:
        """The offline-run folders of a logged source (empty when it is not logged)."""
        entry = self._index().get(self.project, {}).get(source) or {}
        return [self.workdir.wandb_dir / f for f in entry.get("folders", [])]


def read_offline_run(folder: str | os.PathLike) -> dict[str, Any]:
    """An offline run as W&B's own reader (``wandb leet inspect --json``, wandb >= 0.31) reports it.

    Returns ``{"run": the run record (id, name, group, job type, config), "summary":
    {key: value}, "history": [{key: value, "_step": step}, ...], "files": [paths]}``.
    """
    exe = Path(sys.executable).with_name("wandb")
    cmd = [str(exe) if exe.exists() else "wandb", "leet", "inspect", "--json", str(folder)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    run: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    files: list[str] = []
    for line in out.splitlines():
        rec = json.loads(line) if line.startswith("{") else {}
        kind = rec.get("type")
        if kind == "run":
            run = rec["run"]
        elif kind == "summary":
            summary.update(rec["summary"].get("update") or {})
        elif kind == "history":
            history.append(rec["history"]["item"])
        elif kind == "files":
            files += [f["path"] for f in rec["files"].get("files", [])]
    return {"run": run, "summary": summary, "history": history, "files": files}
