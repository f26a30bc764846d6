"""Metric tables and confusion matrices of one system from the predictions store.

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
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from serray import metrics

__all__ = ["SystemReport", "evaluate_predictions"]

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
