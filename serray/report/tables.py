"""Metric tables and confusion matrices from the predictions store.

A *system* is one (run, config_id) pair; its seeds are repetitions. For each system the
report gives, on one split (``test`` by default, ``validation`` on request):

* per fold and seed: n, UA, WA, macro-F1;
* pooled over folds for each seed (every utterance of a LOSO run once), then mean and
  standard deviation over seeds; the mean of the per-fold UAs beside it;
* UA per group (gender, corpus, ... any manifest column);
* the confusion matrix pooled over folds and seeds (counts and row-normalised recall).

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"run": "r", "config_id": "c", "seed": 0, "fold": [0, 0, 1, 1], "split": "test",
    ...                    "utt_id": list("abcd"), "label": ["x", "y", "x", "y"], "pred": ["x", "y", "y", "y"],
    ...                    "logits": [[1, 0]] * 4})
    >>> rep = evaluate_predictions(df, ["x", "y"])[0]
    >>> round(rep.summary["ua_pooled_mean"], 3), round(rep.summary["ua_fold_mean"], 3)
    (0.75, 0.75)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from serray import io, metrics

__all__ = ["SystemReport", "evaluate_predictions", "write_report"]

log = logging.getLogger(__name__)


@dataclass
class SystemReport:
    """Metrics of one (run, config_id) on one split."""

    run: str
    config_id: str
    split: str
    classes: list[str]
    per_fold: pd.DataFrame
    per_seed: pd.DataFrame
    per_group: pd.DataFrame
    confusion: np.ndarray
    summary: dict

    @property
    def name(self) -> str:
        return f"{self.run}/{self.config_id}"


def _scores(y: pd.Series, p: pd.Series, classes: Sequence[str]) -> dict:
    return {"n": len(y), **metrics.summary(y.to_numpy(), p.to_numpy(), list(classes))}


def evaluate_predictions(
    df: pd.DataFrame,
    classes: Sequence[str],
    manifest: pd.DataFrame | None = None,
    split: str = "test",
    by: Iterable[str] = ("gender", "corpus"),
) -> list[SystemReport]:
    """Compute the report tables for every (run, config_id) in ``df``.

    Args:
        df: Rows of the predictions store.
        classes: Class list (logit order); also the order of confusion rows/columns.
        manifest: Manifest to look up group columns by ``utt_id`` (optional).
        split: ``"test"`` or ``"validation"``.
        by: Manifest columns for per-group UA (missing columns are skipped).

    Raises:
        ValueError: No rows for the split.
    """
    d = df[df["split"] == split]
    if d.empty:
        raise ValueError(f"no {split} predictions in the selection")
    groups = [c for c in by if manifest is not None and c in manifest.columns]
    if groups:
        d = d.merge(manifest[["utt_id", *groups]], on="utt_id", how="left")
    reports = []
    for (run, cfg), sys_df in d.groupby(["run", "config_id"], sort=True):
        per_fold = pd.DataFrame(
            [{"seed": s, "fold": f, **_scores(g["label"], g["pred"], classes)} for (s, f), g in sys_df.groupby(["seed", "fold"])]
        )
        per_seed = pd.DataFrame(
            [{"seed": s, **_scores(g["label"], g["pred"], classes)} for s, g in sys_df.groupby("seed")]
        )
        rows = []
        for col in groups:
            for val, g in sys_df.groupby(col):
                ua_seeds = [metrics.unweighted_average_recall(gs["label"], gs["pred"], list(classes)) for _, gs in g.groupby("seed")]
                rows.append({"column": col, "group": val, "n": len(g) // max(1, g["seed"].nunique()), "ua": float(np.mean(ua_seeds))})
        per_group = pd.DataFrame(rows, columns=["column", "group", "n", "ua"])
        conf = metrics.confusion(sys_df["label"].to_numpy(), sys_df["pred"].to_numpy(), list(classes))
        n_seeds = int(per_seed["seed"].nunique())
        summary = {
            "run": run,
            "config_id": cfg,
            "split": split,
            "n_seeds": n_seeds,
            "n_folds": int(per_fold["fold"].nunique()),
            "n_utterances": int(per_seed["n"].iloc[0]),
            "ua_pooled_mean": float(per_seed["ua"].mean()),
            "ua_pooled_std": float(per_seed["ua"].std(ddof=1)) if n_seeds > 1 else 0.0,
            "wa_pooled_mean": float(per_seed["wa"].mean()),
            "wa_pooled_std": float(per_seed["wa"].std(ddof=1)) if n_seeds > 1 else 0.0,
            "f1_pooled_mean": float(per_seed["f1"].mean()),
            "ua_fold_mean": float(per_fold["ua"].mean()),
            "ua_fold_std": float(per_fold.groupby("seed")["ua"].std(ddof=1).mean()) if per_fold["fold"].nunique() > 1 else 0.0,
        }
        reports.append(SystemReport(run, cfg, split, list(classes), per_fold, per_seed, per_group, conf, summary))
    return reports


def _pm(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "")


def _summary_table(reports: Sequence[SystemReport]) -> pd.DataFrame:
    rows = []
    for r in reports:
        s = r.summary
        row = {
            "system": r.name,
            "seeds": s["n_seeds"],
            "folds": s["n_folds"],
            "UA %": _pm(s["ua_pooled_mean"], s["ua_pooled_std"], s["n_seeds"]),
            "WA %": _pm(s["wa_pooled_mean"], s["wa_pooled_std"], s["n_seeds"]),
            "F1 %": f"{100 * s['f1_pooled_mean']:.1f}",
            "UA fold mean %": f"{100 * s['ua_fold_mean']:.1f} ± {100 * s['ua_fold_std']:.1f}",
        }
        for _, g in r.per_group.iterrows():
            row[f"UA {g['column']}={g['group']} %"] = f"{100 * g['ua']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def plot_confusion(rep: SystemReport, path: Path) -> None:
    """Row-normalised confusion matrix with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = rep.confusion.astype(float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(rep.classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.8 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), rep.classes, rotation=45, ha="right")
    ax.set_yticks(range(n), rep.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"{rep.name} ({rep.split}, UA {100 * rep.summary['ua_pooled_mean']:.1f} %)", fontsize=9)
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def write_report(
    workdir: str | Path,
    runs: Sequence[str] | None = None,
    *,
    split: str = "test",
    by: Iterable[str] = ("gender", "corpus"),
    out: str | Path | None = None,
) -> Path:
    """Write ``report.md``, ``summary.csv``, ``table.tex``, per-fold CSVs and confusion plots.

    Args:
        workdir: Work directory with a predictions store (and manifests for groups).
        runs: Runs to include (default: all runs in the store).
        split: ``test`` (default) or ``validation``.
        by: Manifest columns for per-group UA.
        out: Output folder (default ``W/reports/<first run or 'all'>``).

    Returns:
        The output folder.
    """
    from serray.manifest import ManifestError, load_manifests
    from serray.predictions import list_runs, read_predictions, run_classes

    runs = list(runs) if runs else list_runs(workdir)
    if not runs:
        raise FileNotFoundError(f"{workdir}: the predictions store is empty; run `serray train` first")
    df = read_predictions(workdir, runs)
    classes = run_classes(workdir, runs[0])
    try:
        manifest = load_manifests(workdir)
    except ManifestError:
        manifest = None
        log.warning("no manifests in %s: per-group UA is skipped", workdir)
    reports = evaluate_predictions(df, classes, manifest, split=split, by=by)
    out = Path(out) if out else Path(workdir) / "reports" / (runs[0] if len(runs) == 1 else "comparison")
    table = _summary_table(reports)
    io.write_text(table.to_csv(index=False), out / "summary.csv")
    io.write_text(table.to_latex(index=False, escape=True, column_format="l" + "r" * (table.shape[1] - 1)), out / "table.tex")
    lines = [f"# serray report ({split} split)", "", f"Runs: {', '.join(runs)}. Work directory: `{workdir}`.", "",
             "UA = unweighted average recall (primary), WA = accuracy; pooled over folds per seed, "
             "mean ± standard deviation over seeds.", "", table.to_markdown(index=False), ""]
    notes = _run_notes(workdir, runs)
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    for rep in reports:
        slug = f"{rep.run}__{rep.config_id}"
        io.write_text(rep.per_fold.to_csv(index=False), out / f"per_fold__{slug}.csv")
        cm = pd.DataFrame(rep.confusion, index=[f"true {c}" for c in classes], columns=[f"pred {c}" for c in classes])
        io.write_text(cm.to_csv(), out / f"confusion__{slug}.csv")
        plot_confusion(rep, out / f"confusion__{slug}.png")
        lines += [f"## {rep.name}", "", "Per fold (mean over seeds):", "",
                  rep.per_fold.groupby("fold")[["n", "ua", "wa", "f1"]].mean().round(4).to_markdown(), "",
                  "Confusion matrix (counts, pooled over folds and seeds):", "", cm.to_markdown(), "",
                  f"![confusion](confusion__{slug}.png)", ""]
    io.write_text("\n".join(lines), out / "report.md")
    log.info("report written to %s", out)
    return out


def _run_notes(workdir: str | Path, runs: Sequence[str]) -> list[str]:
    """Notes carried in run records (e.g. an optimistic selection mode)."""
    notes = []
    for run in runs:
        rec = Path(workdir) / "runs" / run / "record.json"
        if rec.exists():
            r = io.read_json(rec)
            for n in r.get("notes", []) or []:
                notes.append(f"{run}: {n}")
    return notes
