"""Paired significance tests between two systems over the same units (speakers or folds).

For two systems scored on the same units (per-speaker UA, seeds averaged):

* the paired t-test (:func:`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank test
  (:func:`scipy.stats.wilcoxon`, scipy's defaults) on the per-unit UAs, with the number
  of pairs;
* a seeded cluster bootstrap of the *pooled* UA difference: units are resampled with
  replacement and both systems' UAs are recomputed from the resampled units' per-class
  counts, so the interval respects that utterances of one speaker are not independent.

Example:
    >>> import numpy as np
    >>> a = pd.Series([0.7, 0.6, 0.8, 0.75, 0.65], index=list("abcde"))
    >>> b = pd.Series([0.6, 0.55, 0.7, 0.7, 0.66], index=list("abcde"))
    >>> t = paired_test(a, b)
    >>> t.n_pairs, round(t.mean_diff, 3)
    (5, 0.058)
    >>> significance_mark(0.003)
    '**'
    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(3).tolist()
    [0.03, 0.06, 0.06]

With several systems every pair is tested; :func:`adjust_pvalues` corrects a family of
p-values for multiple comparisons: Holm-Bonferroni (``holm``, controls the family-wise
error rate; the default of ``serray report``), Benjamini-Hochberg (``bh``, controls the
false discovery rate; :func:`scipy.stats.false_discovery_control`) or ``none``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["PairedTest", "paired_test", "bootstrap_ua_diff", "significance_mark", "adjust_pvalues", "MARKS_NOTE",
           "CORRECTIONS", "CORRECTION_NAMES"]

MARKS_NOTE = "`*` p < 0.05, `**` p < 0.01, `***` p < 0.001"

#: Multiple-comparison corrections of :func:`adjust_pvalues`.
CORRECTIONS = ("holm", "bh", "none")

#: How the report names each correction.
CORRECTION_NAMES = {"holm": "Holm-Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}


@dataclass
class PairedTest:
    """Result of :func:`paired_test` (``a`` minus ``b``)."""

    a: str
    b: str
    unit: str
    n_pairs: int
    mean_diff: float
    t: float
    p_ttest: float
    w: float
    p_wilcoxon: float
    ua_diff: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_level: float = 0.95
    n_boot: int = 0

    def as_row(self) -> dict:
        return asdict(self)


def significance_mark(p: float) -> str:
    """Stars for a p-value (``""`` when not significant at 0.05 or undefined)."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def adjust_pvalues(pvalues, method: str = "holm") -> np.ndarray:
    """p-values adjusted for multiple comparisons within one family.

    NaN p-values (undefined tests) stay NaN and do not count as tests.

    Args:
        pvalues: The family's raw p-values.
        method: ``holm`` (Holm-Bonferroni step-down: ``max_{j<=i} min(1, (m - j + 1) p_(j))``
            over the sorted p-values), ``bh`` (Benjamini-Hochberg step-up) or ``none``.

    Raises:
        ValueError: Unknown ``method``.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    p = np.asarray(pvalues, dtype=float).copy()
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        return p
    q = p[ok]
    if method == "bh":
        from scipy.stats import false_discovery_control

        p[ok] = false_discovery_control(q, method="bh")
        return p
    order = np.argsort(q, kind="stable")
    m = len(q)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * q[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    p[ok] = adjusted
    return p


def paired_test(ua_a: pd.Series, ua_b: pd.Series, a: str = "a", b: str = "b", unit: str = "speaker") -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test on the units both series have.

    Undefined statistics (fewer than 2 pairs, all differences zero) are NaN.
    """
    common = ua_a.index.intersection(ua_b.index)
    x = ua_a.loc[common].to_numpy(float)
    y = ua_b.loc[common].to_numpy(float)
    d = x - y
    t = p_t = w = p_w = math.nan
    if len(common) >= 2 and np.any(d != 0):
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tt = stats.ttest_rel(x, y)
            t, p_t = float(tt.statistic), float(tt.pvalue)
            wt = stats.wilcoxon(x, y)
            w, p_w = float(wt.statistic), float(wt.pvalue)
    return PairedTest(a, b, unit, int(len(common)), float(d.mean()) if len(d) else math.nan, t, p_t, w, p_w)


def _ua(correct: np.ndarray, support: np.ndarray) -> np.ndarray:
    """UA over the last axis (classes without support are left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = np.where(support > 0, correct / np.where(support > 0, support, 1), np.nan)
    return np.nanmean(rec, axis=-1)


def bootstrap_ua_diff(
    correct_a: np.ndarray, correct_b: np.ndarray, support: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Pooled UA difference (a - b) and its percentile bootstrap interval over units.

    Args:
        correct_a, correct_b: ``[U, C]`` correct counts per unit and class (seed-averaged).
        support: ``[U, C]`` utterances per unit and class.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling (same seed, same interval).
        level: Coverage of the interval.

    Returns:
        ``(difference, low, high)``.

    Example:
        >>> s = np.array([[5, 5], [5, 5], [5, 5]])
        >>> ca, cb = np.array([[5, 4], [4, 4], [5, 5]]), np.array([[4, 4], [3, 4], [5, 4]])
        >>> d, lo, hi = bootstrap_ua_diff(ca, cb, s, n_boot=200)
        >>> round(d, 3), lo <= d <= hi
        (0.1, True)
    """
    correct_a, correct_b, support = (np.asarray(v, float) for v in (correct_a, correct_b, support))
    diff = float(_ua(correct_a.sum(0), support.sum(0)) - _ua(correct_b.sum(0), support.sum(0)))
    n_units = support.shape[0]
    if n_units < 2 or n_boot < 1:
        return diff, math.nan, math.nan
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(float)
    sup = weights @ support
    boot = _ua(weights @ correct_a, sup) - _ua(weights @ correct_b, sup)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(boot, [alpha, 1.0 - alpha])
    return diff, float(lo), float(hi)
