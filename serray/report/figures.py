"""Report figures (matplotlib, Agg backend), each written as PNG and PDF.

Every function takes plain tables and a path *stem* (``out/confusion__svm``) and writes
``stem.png`` and ``stem.pdf`` atomically; it returns the PNG path. Titles carry the
system labels, so an optimistic or transductive system says so in its figures too.

Example:
    >>> import tempfile, numpy as np
    >>> p = confusion_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], "demo", Path(tempfile.mkdtemp()) / "cm")
    >>> p.suffix, p.with_suffix(".pdf").stat().st_size > 0
    ('.png', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from serray import io

__all__ = ["curve_labels", "confusion_figure", "bars_figure", "ensemble_curve_figure", "membership_figure", "tune_progress_figure",
           "heatmap_figure", "save_figure"]


def curve_labels(selection: str) -> tuple[str, str]:
    """Legend labels of the validation and test curves of ``ua_vs_k.png``.

    The curve the subsets were selected on says so; under ``test-optimistic`` that is
    the test curve, marked optimistic.
    """
    if selection == "test-optimistic":
        return "validation UA of the selected subset", "test UA (selection; optimistic)"
    return "validation UA (selection)", "test UA of the selected subset"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(text: str, width: int = 70) -> str:
    """Wrap a long title onto lines of at most ``width`` characters."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def save_figure(fig, stem: Path) -> Path:
    """Write ``stem.png`` (130 dpi) and ``stem.pdf``; close the figure; return the PNG."""
    plt = _plt()
    stem = Path(stem)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        with io.atomic_path(stem.with_name(stem.name + f".{ext}"), suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=130, format=ext)
    plt.close(fig)
    return stem.with_name(stem.name + ".png")


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str, stem: Path) -> Path:
    """Counts (left) and row-normalised recall (right) of one confusion matrix."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.5 * n, 1.3 + 0.7 * n))
    for ax, mat, sub, fmt in ((axes[0], cm, "counts", "{:.0f}"), (axes[1], norm, "row-normalised (recall %)", "{:.0f}")):
        shown = mat if sub == "counts" else 100 * mat
        ax.imshow(mat / max(mat.max(), 1e-12), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(sub, fontsize=8)
        top = mat.max() if mat.max() > 0 else 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, fmt.format(shown[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] > 0.5 * top else "black")
    fig.suptitle(_title(title, 90), fontsize=8)
    return save_figure(fig, stem)


def bars_figure(frame: pd.DataFrame, title: str, stem: Path, ylabel: str = "UA (%)") -> Path:
    """Grouped bars: rows of ``frame`` are groups on the x axis, columns are systems."""
    plt = _plt()
    groups, systems = list(frame.index), list(frame.columns)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(min(14.0, max(4.0, 0.25 * len(groups) * max(1, len(systems)) + 3.5)), 3.4))
    x = np.arange(len(groups))
    for i, s in enumerate(systems):
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, frame[s].to_numpy(float), width, label=str(s))
    ax.set_xticks(x, [str(g) for g in groups], fontsize=8, rotation=0 if len(groups) < 8 else 45)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(_title(title), fontsize=8)
    return save_figure(fig, stem)


def ensemble_curve_figure(best_per_k: pd.DataFrame, title: str, stem: Path, single_test_ua: float | None = None,
                          selection: str = "validation") -> Path:
    """UA against ensemble size: validation and test curves, the gap between them shaded.

    The curve the subsets were selected on says so (the test curve, marked optimistic,
    under ``selection="test-optimistic"``).
    """
    val_label, test_label = curve_labels(selection)
    plt = _plt()
    k = best_per_k["k"].to_numpy()
    val, test = 100 * best_per_k["val_ua"].to_numpy(float), 100 * best_per_k["test_ua"].to_numpy(float)
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.3), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    ax.plot(k, val, "o-", label=val_label)
    ax.plot(k, test, "s-", label=test_label)
    ax.fill_between(k, val, test, color="grey", alpha=0.2, label="validation - test gap")
    if single_test_ua is not None:
        ax.axhline(100 * single_test_ua, color="grey", ls="--", label="mean single member, test")
    ax.set_xlabel("ensemble size k")
    ax.set_ylabel("UA (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    axes[1].bar(k, val - test, color="tab:grey")
    axes[1].set_xlabel("k")
    axes[1].set_ylabel("validation - test UA (pp)")
    axes[1].grid(axis="y", alpha=0.3)
    fig.suptitle(_title(title, 100), fontsize=8)
    return save_figure(fig, stem)


def membership_figure(mix: pd.DataFrame, title: str, stem: Path) -> Path:
    """Stacked bars: members per run (variant) in the best subset of each k."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    cols = [c for c in mix.columns if c != "k"]
    bottom = np.zeros(len(mix))
    for c in cols:
        ax.bar(mix["k"], mix[c].to_numpy(float), bottom=bottom, label=str(c))
        bottom += mix[c].to_numpy(float)
    ax.set_xlabel("ensemble size k")
    ax.set_ylabel("members")
    ax.legend(fontsize=6)
    ax.set_title(_title(title), fontsize=8)
    return save_figure(fig, stem)


def tune_progress_figure(trials: pd.DataFrame, title: str, stem: Path) -> Path:
    """Each trial's validation UA and the best so far, over trial order and wall time.

    ``trials`` has ``order``, ``minutes`` (end time since the first start), ``val_ua``
    and ``stopped`` (bool: ended early by ASHA).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.3), sharey=True)
    for ax, x, xlabel in ((axes[0], "order", "trial (in order of completion)"), (axes[1], "minutes", "wall time (min)")):
        t = trials.sort_values(x)
        best = 100 * t["val_ua"].cummax()
        stop = t["stopped"].to_numpy(bool)
        ax.scatter(t[x][~stop], 100 * t["val_ua"][~stop], s=14, label="completed", color="tab:blue")
        ax.scatter(t[x][stop], 100 * t["val_ua"][stop], s=18, marker="x", label="stopped by ASHA", color="tab:red")
        ax.step(t[x], best, where="post", color="black", label="best so far")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation UA (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(title, 100), fontsize=8)
    return save_figure(fig, stem)


def heatmap_figure(frame: pd.DataFrame, title: str, stem: Path, fmt: str = "{:.2f}", xlabel: str = "",
                   ylabel: str = "", cmap: str = "viridis") -> Path:
    """Annotated heatmap of a numeric table (NaN cells are left blank)."""
    plt = _plt()
    mat = frame.to_numpy(float)
    r, c = mat.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + 0.7 * c), min(10.0, 1.4 + 0.45 * r)))
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, aspect="auto")
    ax.set_xticks(range(c), [str(v) for v in frame.columns], rotation=45 if c > 4 else 0, ha="right" if c > 4 else "center", fontsize=7)
    ax.set_yticks(range(r), [str(v) for v in frame.index], fontsize=7)
    if r * c <= 400:
        finite = mat[np.isfinite(mat)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(r):
            for j in range(c):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if mat[i, j] < mid else "black")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    ax.set_title(_title(title, 60), fontsize=8)
    return save_figure(fig, stem)
