"""What a report compares: *systems* resolved from run names, tune experiments and ensembles.

A system is one set of per-utterance predictions with one or more seeds. The names a
user passes to ``serray report W --runs ...``:

* ``RUN``: a run of the predictions store (``serray train`` or one variant of
  ``serray seeds``). When ``W/tune/RUN/best.yaml`` exists, RUN is a Tune experiment and
  the system is its best trial (selected on validation UA).
* ``RUN/CONFIG_ID``: one configuration of a run (e.g. one Tune trial).
* ``ensemble:NAME`` (or ``ensemble:NAME:k=K``): the best subset (of size K) of the
  ensemble search in ``W/ensemble/NAME``, re-fused from its members' stored logits.

Each system carries *caveats*: the optimistic or transductive labels found in its
records (test-selected ensembles, ``normalize: speaker``, speaker-dependent folds, and
any record text that says "optimistic" or "transductive"). The report names them.

Example:
    >>> parse_name("ensemble:mlp-x:k=3")
    ('ensemble', 'mlp-x', '3')
    >>> parse_name("svm-run/abc123")
    ('run', 'svm-run', 'abc123')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from serray import io
from serray.workdir import Workdir

__all__ = ["System", "parse_name", "resolve_systems", "check_same_classes", "caveats_of_record"]

log = logging.getLogger(__name__)



@dataclass
class System:
    """One compared system.

    Attributes:
        name: Display name (as the user wrote it).
        kind: ``train``, ``seeds``, ``tune-best``, ``tune-trial``, ``ensemble`` or ``predictions``.
        classes: Class names (logit order).
        predictions: Store rows (``run, config_id, seed, fold, split, utt_id, label, pred``).
        records: The run records behind it (may be empty).
        caveats: Optimistic/transductive labels, one line each.
        source: Where it came from (folder or run).
        extra: Kind-specific data (ensemble: leaderboard tables).
    """

    name: str
    kind: str
    classes: list[str]
    predictions: pd.DataFrame
    records: list[dict] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Name with its caveat kinds, e.g. ``ens (optimistic)``."""
        kinds = sorted({"optimistic" if "optimistic" in c.lower() else "transductive" for c in self.caveats})
        return self.name + (f" ({', '.join(kinds)})" if kinds else "")

    @property
    def n_seeds(self) -> int:
        return int(self.predictions["seed"].nunique())


def parse_name(text: str) -> tuple[str, str, str | None]:
    """``(kind, name, qualifier)``: kind ``ensemble`` or ``run``; qualifier k or config_id."""
    text = text.strip()
    if text.startswith("ensemble:"):
        rest = text[len("ensemble:"):]
        name, _, k = rest.partition(":k=")
        if not name:
            raise ValueError(f"--runs {text!r}: expected ensemble:NAME or ensemble:NAME:k=K")
        return "ensemble", name, (k or None)
    run, _, cid = text.partition("/")
    if not run:
        raise ValueError(f"--runs {text!r}: expected RUN, RUN/CONFIG_ID or ensemble:NAME")
    return "run", run, (cid or None)


def _scan_text(obj: Any, depth: int = 0) -> list[str]:
    """Strings in a record that say optimistic or transductive (history is skipped)."""
    if depth > 4:
        return []
    if isinstance(obj, str):
        low = obj.lower()
        return [obj] if ("optimistic" in low or "transductive" in low) else []
    if isinstance(obj, dict):
        return [s for k, v in obj.items() if k not in ("history", "metrics", "command_line") for s in _scan_text(v, depth + 1)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _scan_text(v, depth + 1)]
    return []


def caveats_of_record(record: dict) -> list[str]:
    """Optimistic/transductive labels of one run or trial record.

    Example:
        >>> caveats_of_record({"normalize": "speaker"})[0].startswith("transductive")
        True
        >>> caveats_of_record({"normalize": "global", "notes": ["x"]})
        []
    """
    from serray.training.spec import TRANSDUCTIVE_SPEAKER_NORM

    out = []
    if record.get("normalize") == "speaker":  # the line the record's transductive_reason gives, once
        out.append(f"transductive: {TRANSDUCTIVE_SPEAKER_NORM}")
    folds = (record.get("metrics") or {}).get("folds") or []
    if any("speaker-dependent" in str(f.get("name", "")) for f in folds):
        out.append("optimistic: speaker-dependent folds (test speakers also in training)")
    for s in _scan_text(record):
        kind = "optimistic" if "optimistic" in s.lower() else "transductive"
        line = s if s.lower().startswith(kind) else f"{kind}: {s}"
        if line not in out:
            out.append(line)
    return out


def _read_record(workdir: Workdir, run: str) -> dict | None:
    path = workdir.run_record(run)
    return io.read_json(path) if path.exists() else None


def _tune_trial(workdir: Workdir, run: str, trial_id: str | None) -> tuple[str, dict] | None:
    """``(trial_id, record)`` of a Tune experiment's trial (default: its best.yaml's)."""
    best = workdir.tune_best(run)
    if not best.exists():
        return None
    b = io.read_yaml(best)
    tid = str(trial_id or b["trial_id"])
    trial = workdir.tune_trial(run, tid)
    if trial_id is not None and not trial.exists():
        return None
    rec = io.read_json(trial) if trial.exists() else {}
    return tid, {**{k: v for k, v in b.items() if k not in ("trial_id", "val_ua", "test_ua", "config")}, **rec}


def _run_system(workdir: Workdir, text: str, run: str, cid: str | None) -> System:
    from serray.predictions import read_predictions, run_classes

    df = read_predictions(workdir, [run])
    classes = run_classes(workdir, run)
    records, kind = [], "predictions"
    tb = _tune_trial(workdir, run, cid)
    if tb is not None:
        records, kind = [tb[1]], ("tune-best" if cid is None else "tune-trial")
        cid = tb[0]
    rec = _read_record(workdir, run)
    if rec is not None:
        records, kind = [rec], ("seeds" if "seeds" in rec else "nested" if "nested" in rec else "train")
    cids = sorted(df["config_id"].unique())
    if cid is None and len(cids) > 1:
        raise ValueError(f"run {run!r} holds {len(cids)} configurations {cids[:5]}; name one as {run}/CONFIG_ID")
    if cid is not None:
        if cid not in cids:
            raise ValueError(f"run {run!r} has no configuration {cid!r}; it has {cids[:10]}")
        df = df[df["config_id"] == cid]
    caveats = [c for r in records for c in caveats_of_record(r)]
    return System(text, kind, classes, df.reset_index(drop=True), records, list(dict.fromkeys(caveats)), run)


def _ensemble_system(workdir: Workdir, text: str, name: str, k: str | None) -> System:
    folder = workdir.ensemble(name)
    if not (folder / "summary.json").exists():
        have = sorted(p.name for p in workdir.ensemble_dir.glob("*") if (p / "summary.json").exists())
        raise ValueError(f"{text}: no ensemble result {folder}; ensembles in {workdir}: {have or 'none'}")
    summary = io.read_json(folder / "summary.json")
    bpk = pd.read_csv(folder / "best_per_k.csv") if (folder / "best_per_k.csv").exists() else None
    if k is None:
        members = list(summary["best"]["members"])
    else:
        if bpk is None or int(k) not in set(bpk["k"].astype(int)):
            raise ValueError(f"{text}: ensemble {name!r} has no subset of size k={k}")
        members = bpk.loc[bpk["k"].astype(int) == int(k), "members"].iloc[0].split()
    df, classes, records = _fuse_members(workdir, members, summary.get("fusion", "logits"))
    caveats = []
    if summary.get("selection") == "test-optimistic":
        caveats.append("optimistic: ensemble members were selected on test UA")
    caveats += [c for r in records for c in caveats_of_record(r)]
    extra = {"summary": summary, "best_per_k": bpk, "folder": str(folder)}
    mix = folder / "membership_mix.csv"
    if mix.exists():
        extra["membership_mix"] = pd.read_csv(mix)
    return System(text, "ensemble", classes, df, records, list(dict.fromkeys(caveats)), str(folder), extra)


def _fuse_members(workdir: Workdir, members: Sequence[str], fusion: str) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """Per-utterance fused predictions of ``members`` (``run/config_id/seed`` names)."""
    from serray.ensemble.search import Members, fused_predictions
    from serray.predictions import read_predictions, run_classes

    parts = [m.rsplit("/", 2) for m in members]
    runs = sorted({p[0] for p in parts})
    classes = run_classes(workdir, runs[0])
    df = read_predictions(workdir, runs)
    df["member"] = df["run"] + "/" + df["config_id"] + "/" + df["seed"].astype(str)
    names = list(dict.fromkeys(members))
    counts = [list(members).count(n) for n in names]
    rows, arrays = {}, {}
    for split in ("validation", "test"):
        part = df[(df["split"] == split) & df["member"].isin(names)]
        first = part[part["member"] == names[0]].sort_values(["fold", "utt_id"])
        keys = first[["fold", "utt_id", "label"]].reset_index(drop=True)
        stack = []
        for n in names:
            m = part[part["member"] == n].set_index(["fold", "utt_id"]).reindex(pd.MultiIndex.from_frame(keys[["fold", "utt_id"]]))
            if m["logits"].isna().any():
                raise ValueError(f"ensemble member {n} does not cover the same {split} rows as {names[0]}")
            stack.append(np.stack(m["logits"].map(np.asarray).to_numpy()))
        rows[split], arrays[split] = keys, np.stack(stack)
    y = {s: rows[s]["label"].map({c: i for i, c in enumerate(classes)}).to_numpy() for s in rows}
    mem = Members.from_arrays(arrays["validation"], y["validation"], arrays["test"], y["test"], classes, names)
    subset = [i for i, c in enumerate(counts) for _ in range(c)]
    out = []
    for split, keys in rows.items():
        pred = fused_predictions(mem, subset, split, fusion)
        out.append(keys.assign(run="ensemble", config_id="fused", seed=0, split=split,
                               pred=[classes[i] for i in pred]))
    recs = [r for r in (_read_record(workdir, run) for run in runs) if r is not None]
    return pd.concat(out, ignore_index=True), classes, recs


def resolve_systems(workdir: str | Path, names: Sequence[str]) -> list[System]:
    """Resolve every name (see the module docstring) and check they share one class set.

    Raises:
        ValueError: An unknown name, an ambiguous run, or different class sets.
        FileNotFoundError: A run without predictions.
    """
    w = Workdir(workdir)
    systems = []
    for text in names:
        kind, name, qual = parse_name(text)
        systems.append(_ensemble_system(w, text, name, qual) if kind == "ensemble" else _run_system(w, text, name, qual))
    check_same_classes(systems)
    return systems


def check_same_classes(systems: Sequence[System]) -> None:
    """One clear error when systems were trained on different class sets.

    Raises:
        ValueError: Names every system's classes.
    """
    sets = {tuple(s.classes) for s in systems}
    if len(sets) > 1:
        detail = "; ".join(f"{s.name}: {s.classes}" for s in systems)
        raise ValueError(f"runs have different class sets and cannot be compared ({detail}); "
                         "compare runs trained with the same --labels")
