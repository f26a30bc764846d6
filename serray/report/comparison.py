"""Comparison of several systems: summary metrics, per-group and per-speaker UA, paired tests.

Every number is computed from the predictions store (through :class:`System`):

* **pooled**: the test predictions of all folds concatenated (every utterance of a LOSO
  run once), scored per seed; mean and standard deviation over seeds;
* **fold-averaged**: each fold scored on its own, averaged over folds per seed, then the
  mean over seeds (± the standard deviation over folds, averaged over seeds);
* per-group UA (gender, corpus) and per-speaker UA, each the mean over seeds;
* paired tests between every pair of systems over speakers (or folds), see
  :mod:`serray.report.statistics`.

Example:
    >>> from serray.report.sources import System
    >>> df = pd.DataFrame({"run": "r", "config_id": "c", "seed": 0, "fold": [0, 0, 1, 1], "split": "test",
    ...                    "utt_id": list("abcd"), "label": list("xyxy"), "pred": list("xyyy")})
    >>> m = system_metrics(System("r", "train", ["x", "y"], df), None)
    >>> round(m.summary["ua_pooled_mean"], 3), round(m.summary["ua_fold_mean"], 3)
    (0.75, 0.75)
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from serray.report.sources import System
from serray.report.statistics import (CORRECTION_NAMES, MARKS_NOTE, adjust_pvalues, bootstrap_ua_diff, paired_test,
                                      significance_mark)
from serray.report.tables import SystemReport, evaluate_predictions

__all__ = ["SystemMetrics", "system_metrics", "epoch_summary", "summary_frame", "format_summary", "unit_ua", "unit_counts",
           "pairwise_tests", "format_pairwise", "per_unit_frame"]

log = logging.getLogger(__name__)


@dataclass
class SystemMetrics:
    """A system with its :class:`~serray.report.tables.SystemReport` and summary numbers."""

    system: System
    report: SystemReport
    summary: dict


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def system_metrics(system: System, manifest: pd.DataFrame | None, split: str = "test",
                   by: Sequence[str] = ("gender", "corpus")) -> SystemMetrics:
    """Summary metrics of one system on ``split`` (see the module docstring)."""
    df = system.predictions.assign(run=system.name, config_id=system.kind)
    by = [c for c in by if c != "speaker"] + ["speaker"]
    rep = evaluate_predictions(df, system.classes, manifest, split=split, by=by)[0]
    fold_means = rep.per_fold.groupby("seed")[["ua", "wa", "f1"]].mean()
    s = {
        "system": system.label,
        "kind": system.kind,
        "seeds": rep.summary["n_seeds"],
        "folds": rep.summary["n_folds"],
        "n": rep.summary["n_utterances"],
        **{f"{m}_pooled_mean": float(rep.per_seed[m].mean()) for m in ("ua", "wa", "f1")},
        **{f"{m}_pooled_std": _std(rep.per_seed[m]) for m in ("ua", "wa", "f1")},
        **{f"{m}_fold_mean": float(fold_means[m].mean()) for m in ("ua", "wa", "f1")},
        **{f"{m}_fold_std_seeds": _std(fold_means[m]) for m in ("ua", "wa", "f1")},
        "ua_fold_std_folds": rep.summary["ua_fold_std"],
    }
    for _, g in rep.per_group[rep.per_group["column"] != "speaker"].iterrows():
        s[f"ua_{g['column']}={g['group']}"] = float(g["ua"])
    if system.kind != "ensemble":
        s.update(epoch_summary([e for r in system.records for e in (r.get("metrics") or {}).get("fold_epochs") or []]))
    return SystemMetrics(system, rep, s)


def epoch_summary(fold_epochs: Sequence[dict]) -> dict:
    """What early stopping chose over a system's torch fold models (a record's
    ``metrics.fold_epochs``): ``best_epoch_median``, ``best_epoch_min`` / ``_max``, and
    ``best_at_last_epoch``, the share of fold models still improving on their last epoch
    (near 1 with early stopping: the epoch budget, not the validation score, ended training;
    1 by definition with ``early_stop=none``); ``{}`` without epochs (scikit-learn, runs
    trained before serray recorded them).

    Example:
        >>> epoch_summary([{"epochs": 8, "best_epoch": 8}, {"epochs": 8, "best_epoch": 5},
        ...                {"epochs": 8, "best_epoch": 8}])
        {'best_epoch_median': 8.0, 'best_epoch_min': 5, 'best_epoch_max': 8, 'best_at_last_epoch': 0.6666666666666666, 'fold_models_with_epochs': 3}
    """
    if not fold_epochs:
        return {}
    best = np.asarray([int(e["best_epoch"]) for e in fold_epochs])
    last = np.asarray([int(e["epochs"]) for e in fold_epochs])
    return {"best_epoch_median": float(np.median(best)), "best_epoch_min": int(best.min()), "best_epoch_max": int(best.max()),
            "best_at_last_epoch": float(np.mean(best == last)), "fold_models_with_epochs": int(len(best))}


def summary_frame(ms: Sequence[SystemMetrics]) -> pd.DataFrame:
    """Numeric summary, one row per system (fractions, not %)."""
    return pd.DataFrame([m.summary for m in ms])


def _pm(mean: float, std: float, show: bool) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if show else "")


def format_summary(frame: pd.DataFrame, marks: dict[str, str] | None = None) -> pd.DataFrame:
    """The paper table: % with one decimal, ± std; ``marks`` appended to the pooled UA."""
    marks = marks or {}
    rows = []
    for _, r in frame.iterrows():
        multi = int(r["seeds"]) > 1
        row = {"system": r["system"], "seeds": int(r["seeds"]), "folds": int(r["folds"]),
               "UA pooled %": _pm(r["ua_pooled_mean"], r["ua_pooled_std"], multi) + marks.get(r["system"], ""),
               "WA pooled %": _pm(r["wa_pooled_mean"], r["wa_pooled_std"], multi),
               "F1 pooled %": _pm(r["f1_pooled_mean"], r["f1_pooled_std"], multi),
               "UA fold-avg %": _pm(r["ua_fold_mean"], r["ua_fold_std_folds"], int(r["folds"]) > 1),
               "WA fold-avg %": f"{100 * r['wa_fold_mean']:.1f}",
               "F1 fold-avg %": f"{100 * r['f1_fold_mean']:.1f}"}
        for col in [c for c in frame.columns if c.startswith("ua_") and "=" in c]:
            row[f"UA {col[3:]} %"] = "" if pd.isna(r[col]) else f"{100 * r[col]:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


SUMMARY_NOTE = (
    "UA = unweighted average recall (primary), WA = accuracy, F1 = macro F1. "
    "*Pooled*: all folds' test predictions scored together, per seed; mean ± standard deviation over seeds. "
    "*Fold-avg*: each fold scored alone, averaged over folds (mean over seeds; ± standard deviation over folds). "
    "Per-group UA: mean over seeds."
)


def unit_ua(m: SystemMetrics, unit: str) -> pd.Series:
    """Per-unit UA (mean over seeds): ``unit`` is ``speaker`` or ``fold``."""
    if unit == "fold":
        return m.report.per_fold.groupby("fold")["ua"].mean()
    g = m.report.per_group
    g = g[g["column"] == unit]
    return pd.Series(g["ua"].to_numpy(float), index=g["group"].astype(str).to_numpy())


def unit_counts(system: System, manifest: pd.DataFrame | None, unit: str, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(correct, support)``: per unit (rows) and class (columns); correct is the seed mean."""
    d = system.predictions[system.predictions["split"] == split]
    if unit != "fold":
        d = d.merge(manifest[["utt_id", unit]], on="utt_id", how="left")
    d = d.assign(unit=d[unit].astype(str), ok=(d["label"] == d["pred"]).astype(float))
    n_seeds = max(1, d["seed"].nunique())
    correct = d.pivot_table(index="unit", columns="label", values="ok", aggfunc="sum", fill_value=0.0) / n_seeds
    support = d.pivot_table(index="unit", columns="label", values="ok", aggfunc="count", fill_value=0) / n_seeds
    cols = [c for c in system.classes]
    return correct.reindex(columns=cols, fill_value=0.0), support.reindex(columns=cols, fill_value=0.0)


def pairwise_tests(ms: Sequence[SystemMetrics], manifest: pd.DataFrame | None, unit: str = "speaker",
                   split: str = "test", n_boot: int = 2000, seed: int = 0, correction: str = "holm") -> pd.DataFrame:
    """Every pair (a, b), a listed first: tests over units and the bootstrap UA difference.

    ``p_ttest_adj`` and ``p_wilcoxon_adj`` are the p-values adjusted for multiple
    comparisons over all pairs (each test its own family; ``correction`` names the method,
    see :func:`~serray.report.statistics.adjust_pvalues`).
    """
    rows = []
    counts = {m.system.name: unit_counts(m.system, manifest, unit, split) for m in ms}
    for ma, mb in itertools.combinations(ms, 2):
        t = paired_test(unit_ua(ma, unit), unit_ua(mb, unit), ma.system.label, mb.system.label, unit)
        (ca, sa), (cb, sb) = counts[ma.system.name], counts[mb.system.name]
        common = ca.index.intersection(cb.index)
        if not np.allclose(sa.loc[common].to_numpy(), sb.loc[common].to_numpy()):
            log.warning("%s and %s were tested on different utterances of some %ss; the bootstrap uses %s's supports",
                        ma.system.name, mb.system.name, unit, ma.system.name)
        t.ua_diff, t.ci_low, t.ci_high = bootstrap_ua_diff(
            ca.loc[common].to_numpy(), cb.loc[common].to_numpy(), sa.loc[common].to_numpy(), n_boot=n_boot, seed=seed)
        t.n_boot = n_boot
        rows.append(t.as_row())
    return with_adjusted(pd.DataFrame(rows), correction)


def with_adjusted(tests: pd.DataFrame, correction: str) -> pd.DataFrame:
    """``tests`` with ``p_ttest_adj``/``p_wilcoxon_adj`` beside the raw p-values and a ``correction`` column."""
    adjust_pvalues([], correction)  # an unknown correction fails even without pairs
    if tests.empty:
        return tests
    out = tests.copy()
    for col in ("p_ttest", "p_wilcoxon"):
        out.insert(out.columns.get_loc(col) + 1, f"{col}_adj", adjust_pvalues(tests[col].to_numpy(float), correction))
    out["correction"] = correction
    return out


def format_pairwise(tests: pd.DataFrame) -> pd.DataFrame:
    """Paper table of :func:`pairwise_tests` (differences in UA percentage points)."""
    rows = []
    for _, t in tests.iterrows():
        adj = f"p adj. ({CORRECTION_NAMES[t['correction']]})" if t["correction"] != "none" else "p"
        rows.append({
            "A": t["a"], "B": t["b"], "pairs": int(t["n_pairs"]),
            "ΔUA pooled (pp)": f"{100 * t['ua_diff']:+.1f}",
            f"{int(100 * t['ci_level'])}% CI (bootstrap)": f"[{100 * t['ci_low']:+.1f}, {100 * t['ci_high']:+.1f}]",
            f"mean Δ per {t['unit']} (pp)": f"{100 * t['mean_diff']:+.1f}",
            "t": f"{t['t']:.2f}", "p (t-test)": f"{t['p_ttest']:.3g}",
            f"{adj} (t-test)": f"{t['p_ttest_adj']:.3g}" + significance_mark(t["p_ttest_adj"]),
            "W": f"{t['w']:.1f}", "p (Wilcoxon)": f"{t['p_wilcoxon']:.3g}",
            f"{adj} (Wilcoxon)": f"{t['p_wilcoxon_adj']:.3g}" + significance_mark(t["p_wilcoxon_adj"]),
        })
    return pd.DataFrame(rows)


def marks_against_best(frame: pd.DataFrame, tests: pd.DataFrame, test: str = "wilcoxon",
                       exclude: Sequence[str] = ()) -> tuple[dict[str, str], str]:
    """Stars for each system that differs significantly from the best (highest pooled UA).

    Systems in ``exclude`` (optimistic or transductive ones) are not candidates for the
    best, unless every system is excluded.
    """
    if tests.empty:
        return {}, ""
    pool = frame[~frame["system"].isin(exclude)]
    pool = pool if len(pool) else frame
    best = pool.loc[pool["ua_pooled_mean"].idxmax(), "system"]
    col = ("p_wilcoxon" if test == "wilcoxon" else "p_ttest") + "_adj"
    marks = {}
    for _, t in tests.iterrows():
        if best in (t["a"], t["b"]):
            other = t["b"] if t["a"] == best else t["a"]
            marks[other] = significance_mark(t[col])
    name = "Wilcoxon signed-rank test" if test == "wilcoxon" else "paired t-test"
    unit = tests["unit"].iloc[0]
    corr = tests["correction"].iloc[0]
    how = "raw p-values" if corr == "none" else f"p-values adjusted over all {len(tests)} pairs ({CORRECTION_NAMES[corr]})"
    note = (f"Stars on UA pooled: differs from the best system ({best}) by a paired {name} over {unit}s; "
            f"{how}, {MARKS_NOTE}.")
    return marks, note


def per_unit_frame(ms: Sequence[SystemMetrics], unit: str) -> pd.DataFrame:
    """Per-unit UA in % (rows: units; columns: systems)."""
    frame = pd.DataFrame({m.system.label: unit_ua(m, unit) for m in ms})
    frame.index.name = unit
    return (100 * frame).round(1)
