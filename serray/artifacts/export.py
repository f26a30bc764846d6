"""``serray export``: a self-contained folder of kept fold models, their fusion, a model card and checksums.

Layout of ``DIR``::

    export.json     members (folders below), fusion rule, source, and the sha256 of every file
    README.md       the model card: data, protocol, label set, the test estimate and how it
                    was selected, what is transductive, library versions
    members/<run>/<config>__seed<s>/fold<k>/   kept fold models (serray.artifacts.fold_model)
    members/<run>/<config>__seed<s>/refit/     with ``--refit all-data`` instead: one model per
                                               configuration and seed, retrained on all the
                                               run's training data (serray.artifacts.refit)

``--runs RUN`` exports every fold model of the run (all its configs and seeds);
``--runs ensemble:NAME[:k=K]`` the fold models of the members of the ensemble search's
validation-selected subset (of size ``K``, else the search's best). :func:`serray.load`
reads the folder back, refusing a checksum mismatch, a missing member or a file that
would execute code.

Example:
    >>> parse_source("ensemble:mlp10:k=3")
    ('ensemble', 'mlp10', 3)
    >>> parse_source("svm-run")
    ('run', 'svm-run', None)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from serray.artifacts.files import ArtifactError, sha256
from serray.artifacts.fold_model import MODEL_FILE
from serray.artifacts.predictor import EXPORT_FILE
from serray.workdir import Workdir

__all__ = ["parse_source", "export_models", "check_export"]


def parse_source(text: str) -> tuple[str, str, int | None]:
    """``RUN`` -> ``("run", RUN, None)``; ``ensemble:NAME[:k=K]`` -> ``("ensemble", NAME, K)``.

    Raises:
        ValueError: A malformed ``ensemble:`` source.
    """
    if not text.startswith("ensemble:"):
        return "run", text, None
    parts = text.split(":")
    k = None
    if len(parts) == 3 and parts[2].startswith("k=") and parts[2][2:].isdigit():
        k = int(parts[2][2:])
    elif len(parts) != 2:
        raise ValueError(f"--runs {text!r}: expected RUN or ensemble:NAME[:k=K], e.g. ensemble:mlp10:k=5")
    if not parts[1]:
        raise ValueError(f"--runs {text!r}: the ensemble name is empty; e.g. ensemble:mlp10")
    return "ensemble", parts[1], k


def _run_members(w: Workdir, run: str) -> list[Path]:
    folders = sorted(p.parent for p in w.models(run).rglob(MODEL_FILE)) if w.models(run).is_dir() else []
    if not folders:
        raise ValueError(f"run {run!r} has no kept fold models under {w.models(run)}; train it again without --no-keep-models")
    return folders


def _ensemble_members(w: Workdir, name: str, k: int | None) -> tuple[list[Path], dict[str, Any]]:
    """The fold models of the validation-selected subset (size ``k`` or the search's best) and its row."""
    folder = w.ensemble(name)
    if not (folder / "summary.json").is_file():
        raise ValueError(f"ensemble {name!r}: no {folder / 'summary.json'}; run `serray ensemble` first")
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("fusion", "logits") != "logits":
        raise ValueError(f"ensemble {name!r} fuses by {summary['fusion']!r}; export supports the 'logits' fusion only")
    row: dict[str, Any] = dict(summary["best"])
    if k is not None:
        board = pd.read_parquet(folder / "leaderboard.parquet")
        rows = board[board["k"] == k].sort_values("position")
        if rows.empty:
            raise ValueError(f"ensemble {name!r} has no subset of size k={k}; sizes: {sorted(board['k'].unique().tolist())}")
        best = rows.iloc[0]
        row = {"k": int(best["k"]), "members": list(best["members"]), "score": float(best["score"]),
               "val_ua": float(best["val_ua"]), "test_ua": float(best["test_ua"]), "test_wa": float(best["test_wa"])}
    folders = []
    for member in row["members"]:
        run, cid, seed = str(member).rsplit("/", 2)
        found = sorted(p.parent for p in (w.models(run) / f"{cid}__seed{int(seed)}").glob(f"fold*/{MODEL_FILE}"))
        if not found:
            raise ValueError(f"ensemble member {member}: no kept fold models under {w.models(run) / f'{cid}__seed{seed}'}; "
                             f"train it again (serray seeds keeps them by default)")
        folders += found
    return folders, {**row, "selection": summary.get("selection"), "note": summary.get("note")}


def _run_record(w: Workdir, run: str) -> dict[str, Any]:
    path = w.run_record(run)
    return json.loads(path.read_text()) if path.is_file() else {}


def export_models(workdir: str | Path, source: str, out: str | Path, *, refit: str = "none", onnx: bool = False,
                  progress: Callable[[str], None] | None = None, resources: Any = None) -> Path:
    """Export ``source`` (``RUN`` or ``ensemble:NAME[:k=K]``) of ``workdir`` to ``out``; returns ``out``.

    Args:
        refit: ``"none"``: the kept fold models (one per fold, configuration and seed);
            ``"all-data"``: one model per configuration and seed, retrained on every
            training utterance (:mod:`serray.artifacts.refit`).
        onnx: Also an ONNX graph per torch member (:mod:`serray.artifacts.onnx_export`).
        progress: Called with a line before and after each refit member.
        resources: Where refit members train (default in this process).

    Raises:
        ValueError: An unknown run or ensemble, members without kept models, an ``out``
            that exists and is not empty, an unknown ``refit``, a member that cannot
            be refit (the message says what to do), or ``onnx`` without its packages.
    """
    from serray.artifacts.onnx_export import export_onnx, require_onnx
    from serray.artifacts.refit import REFIT_MODES, refit_members

    if refit not in REFIT_MODES:
        raise ValueError(f"--refit {refit!r}: use one of {list(REFIT_MODES)}")
    if onnx:
        require_onnx()
    w, out = Workdir(workdir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; give a new folder")
    kind, name, k = parse_source(source)
    selected: dict[str, Any] = {}
    folders = _run_members(w, name) if kind == "run" else None
    if folders is None:
        folders, selected = _ensemble_members(w, name, k)
    infos: dict[str, Any] = {}
    if refit == "all-data":
        members, infos = refit_members(w, folders, out, progress, resources)
    else:
        members = _copy_members(w, folders, out)
    graphs = export_onnx(out, members) if onnx else None
    runs = sorted({Path(m).parts[1] for m in members})
    records = {r: _run_record(w, r) for r in runs}
    from serray.artifacts.card import model_card

    (out / "README.md").write_text(model_card(kind, name, selected, records, members, out, refit=infos or None, onnx=graphs))
    files = {p.relative_to(out).as_posix(): sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    meta = {"format": "serray-export", "format_version": 1, "source": source, "fusion": "logits",
            "members": members, "selected": selected, "refit": refit, "files": files,
            **({"refit_members": infos} if infos else {}), **({"onnx": graphs} if onnx else {})}
    (out / EXPORT_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return out


def _copy_members(w: Workdir, folders: list[Path], out: Path) -> list[str]:
    """Copy the kept fold models into ``out/members/...``; their paths relative to ``out`` (a
    member a greedy ensemble picked several times is copied once and listed that many times)."""
    members = []
    for src in folders:
        rel = Path("members") / src.relative_to(w.models_dir)
        if not (out / rel).exists():
            shutil.copytree(src, out / rel)
        members.append(rel.as_posix())
    return members


def check_export(out: str | Path) -> None:
    """Raise :class:`ArtifactError` unless ``out`` is an export (for callers that want the check alone)."""
    if not (Path(out) / EXPORT_FILE).is_file():
        raise ArtifactError(f"{Path(out) / EXPORT_FILE}: missing; {out} is not a serray export")
