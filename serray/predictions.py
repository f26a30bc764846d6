"""Predictions store: per-utterance logits of every run, config, seed, fold and split.

One row per (run, config_id, seed, fold, split, utt_id) with columns ``run``,
``config_id``, ``seed``, ``fold``, ``split`` (``validation`` / ``test``), ``utt_id``,
``label`` and ``pred`` (canonical names) and ``logits`` (list of floats in the order of
the run's class list). The class list is stored in every file's Parquet metadata
(``serray.classes``, JSON) and in the run record.

Layout: ``W/predictions/<run>/<config_id>__seed<seed>.parquet``. Each part is written
atomically, so appending is adding a file and an interrupted run loses nothing already
written. Next to each part, ``<part>.sha256`` holds the SHA-256 of its bytes, written
with it and checked on every read: a part whose bytes changed afterwards (while it still
parses) is refused naming it, and ``serray seeds`` trains it again (parts written before
checksums existed are read unverified). This table is the only input the ensemble search needs.

Example:
    >>> import pandas as pd, tempfile
    >>> w = tempfile.mkdtemp()
    >>> df = pd.DataFrame({"fold": [0], "split": ["test"], "utt_id": ["u1"], "label": ["sad"],
    ...                    "pred": ["sad"], "logits": [[0.1, 2.0]]})
    >>> _ = write_predictions(w, df, run="r1", config_id="c0", seed=0, classes=["happy", "sad"])
    >>> read_predictions(w, runs=["r1"])[["run", "seed", "utt_id"]].values.tolist()
    [['r1', 0, 'u1']]
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serray import io
from serray.workdir import Workdir

__all__ = [
    "COLUMNS", "SPLITS", "write_predictions", "read_predictions", "run_classes", "list_runs", "predictions_dir",
    "check_name", "part_readable", "part_problem", "PART_FIX",
]

COLUMNS: tuple[str, ...] = ("run", "config_id", "seed", "fold", "split", "utt_id", "label", "pred", "logits")
SPLITS: tuple[str, ...] = ("validation", "test")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def predictions_dir(workdir: str | Path) -> Path:
    """``W/predictions`` (:attr:`serray.workdir.Workdir.predictions_dir`)."""
    return Workdir(workdir).predictions_dir


#: What to do about an unreadable predictions part.
PART_FIX = ("delete it and re-run the command that wrote it (`serray seeds` retrains missing, unreadable and damaged parts; "
            "`serray train` rewrites its run)")


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a safe single path component (it names a folder or a file).

    Letters, digits and ``. _ = + -``, starting with a letter or digit (so no ``/``,
    ``\\``, ``..`` and no empty name); run names, run prefixes, variants and experiment
    and ensemble names all follow this rule.

    Raises:
        ValueError: Naming ``kind`` (e.g. ``--run-prefix``) and the rule.
    """
    if not isinstance(value, str) or not _SAFE.match(value):
        raise ValueError(f"{kind} {value!r} is not a valid name: use one path component of letters, digits and "
                         ". _ = + - (no '/', '\\' or '..', not empty), e.g. my-run_2")
    return value


def part_problem(path: str | Path) -> str | None:
    """Why a predictions part cannot be used (``None`` when it can): its Parquet footer or
    class list is unreadable, or its bytes do not match its checksum (one pass over the
    file's bytes; a part without a checksum, written before checksums existed, is not checked)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        json.loads(meta[b"serray.classes"].decode())
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        return f"unreadable predictions part, truncated or damaged ({type(exc).__name__}: {exc})"
    try:
        io.verify_checksum(path)
    except io.CorruptFileError as exc:
        return str(exc).split("; ")[0].removeprefix(f"{path}: ")
    return None


def part_readable(path: str | Path) -> bool:
    """Whether a predictions part can be used (:func:`part_problem` finds nothing)."""
    return part_problem(path) is None


def _part_classes(part: Path) -> list[str]:
    """The class list in one part's metadata.

    Raises:
        serray.io.CorruptFileError: The part is unreadable (naming it and the fix).
    """
    try:
        meta = pq.read_schema(part).metadata or {}
        return json.loads(meta[b"serray.classes"].decode())
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise io.CorruptFileError(part, f"unreadable predictions part ({type(exc).__name__}: {exc})", PART_FIX) from None


def write_predictions(
    workdir: str | Path,
    df: pd.DataFrame,
    *,
    run: str,
    config_id: str,
    seed: int,
    classes: Sequence[str],
) -> Path:
    """Atomically write one (run, config, seed) part of the store.

    Args:
        workdir: Work directory.
        df: Rows with ``fold, split, utt_id, label, pred, logits``.
        run, config_id, seed: Identify the part (a second write replaces it).
        classes: Class names in logit order.

    Raises:
        ValueError: Missing columns, bad split names, or logits of the wrong length.
    """
    check_name("run", run)
    check_name("config_id", config_id)
    need = ["fold", "split", "utt_id", "label", "pred", "logits"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"predictions for run {run!r} lack columns {missing}")
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise ValueError(f"predictions for run {run!r}: split must be one of {SPLITS}, got {bad_split}")
    lengths = df["logits"].map(len)
    if len(df) and (lengths != len(classes)).any():
        raise ValueError(f"predictions for run {run!r}: logits must have {len(classes)} values (one per class)")
    out = pd.DataFrame(
        {
            "run": run,
            "config_id": config_id,
            "seed": int(seed),
            "fold": df["fold"].astype(int).to_numpy(),
            "split": df["split"].astype(str).to_numpy(),
            "utt_id": df["utt_id"].astype(str).to_numpy(),
            "label": df["label"].astype(str).to_numpy(),
            "pred": df["pred"].astype(str).to_numpy(),
            "logits": [list(map(float, v)) for v in df["logits"]],
        }
    )
    path = Workdir(workdir).predictions_part(run, config_id, seed)
    io.write_parquet(out, path, metadata={"serray.classes": json.dumps(list(classes))}, checksum=True)
    return path


def list_runs(workdir: str | Path) -> list[str]:
    """Runs that have predictions in the store."""
    d = predictions_dir(workdir)
    return sorted(p.name for p in d.iterdir() if p.is_dir() and any(p.glob("*.parquet"))) if d.exists() else []


def _parts(workdir: str | Path, runs: Iterable[str] | None) -> list[Path]:
    w = Workdir(workdir)
    names = list_runs(workdir) if runs is None else list(runs)
    missing = [r for r in names if not any(w.predictions(r).glob("*.parquet"))]
    if missing:
        raise FileNotFoundError(
            f"{w.predictions_dir}: no predictions for run(s) {missing}; runs with predictions: {list_runs(workdir) or 'none'}"
        )
    return sorted(p for r in names for p in w.predictions(r).glob("*.parquet"))


def run_classes(workdir: str | Path, run: str) -> list[str]:
    """The class list (logit order) of ``run``."""
    return _part_classes(_parts(workdir, [run])[0])


def read_predictions(
    workdir: str | Path,
    runs: Iterable[str] | None = None,
    utt_ids: Iterable[str] | None = None,
    split: str | None = None,
) -> pd.DataFrame:
    """Read the store, optionally only some runs, utterances or one split.

    Raises:
        FileNotFoundError: A named run has no predictions.
        ValueError: The runs have different class lists (they cannot be fused).
        serray.io.CorruptFileError: A part is unreadable or its bytes do not match its
            checksum (naming it and the fix).
    """
    parts = _parts(workdir, runs)
    if not parts:
        return pd.DataFrame(columns=list(COLUMNS))
    classes = {json.dumps(_part_classes(p)) for p in parts}
    if len(classes) > 1:
        raise ValueError(f"runs have different class lists {sorted(classes)}; choose runs with the same label set")
    filters = []
    if split is not None:
        filters.append(("split", "=", split))
    frames = [io.read_parquet(p, PART_FIX, filters=filters or None) for p in parts]
    df = pd.concat(frames, ignore_index=True)
    if utt_ids is not None:
        df = df[df["utt_id"].isin(set(utt_ids))].reset_index(drop=True)
    return df
