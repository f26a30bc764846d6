"""Cross-corpus matrix: train on one corpus (or every corpus but one), test on each other corpus.

Each training set is one run of protocol ``cross-corpus`` through
:func:`serray.training.run.train_run` (so it lands in the predictions store and the run
records like any run): ``train_corpora`` = the training set (one or several corpora),
``test_corpora`` = every other corpus of the list. Validation speakers are held out of the
training corpora (speaker-independent, as for every protocol); the test corpora are never
seen. The run's test predictions are then scored per test corpus, giving one row of the
train x test UA matrix per training set (the mean over seeds when there are several).
With ``within=True`` the diagonal holds each corpus's own LOSO result (speaker-independent
within the corpus), for reference.

Example:
    >>> training_sets(["emodb", "emovo", "ravdess"])
    [('emodb',), ('emovo',), ('ravdess',)]
    >>> training_sets(["emodb", "emovo", "ravdess"], leave_one_out=True)
    [('emovo', 'ravdess'), ('emodb', 'ravdess'), ('emodb', 'emovo')]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from serray import io, metrics

if TYPE_CHECKING:
    from serray.training.resources import Resources

__all__ = ["CrossCorpusResult", "training_sets", "score_by_corpus", "run_crosscorpus", "write_crosscorpus"]

log = logging.getLogger(__name__)


def training_sets(corpora: Sequence[str], leave_one_out: bool = False) -> list[tuple[str, ...]]:
    """The training sets: each corpus alone, or each corpus left out once.

    Raises:
        ValueError: Fewer than two corpora, or duplicates.
    """
    corpora = [c.strip() for c in corpora if c.strip()]
    if len(corpora) < 2 or len(set(corpora)) != len(corpora):
        raise ValueError(f"--corpora needs at least two different corpora, got {corpora}")
    if leave_one_out:
        return [tuple(c for c in corpora if c != out) for out in corpora]
    return [(c,) for c in corpora]


def score_by_corpus(preds: pd.DataFrame, corpus_of: dict, classes: Sequence[str]) -> pd.DataFrame:
    """UA/WA/F1 of the test rows of one run, per test corpus and seed."""
    test = preds[preds["split"] == "test"].assign(corpus=lambda d: d["utt_id"].map(corpus_of))
    rows = []
    for (corpus, seed), g in test.groupby(["corpus", "seed"]):
        rows.append({"test": corpus, "seed": int(seed), "n": len(g),
                     **metrics.summary(g["label"].to_numpy(), g["pred"].to_numpy(), list(classes))})
    return pd.DataFrame(rows)


@dataclass
class CrossCorpusResult:
    """Cells (one row per training set, test corpus and seed), the runs, and the matrices."""

    model: str
    labels: str
    cells: pd.DataFrame
    runs: list[str] = field(default_factory=list)

    def matrix(self, metric: str = "ua") -> pd.DataFrame:
        """Mean over seeds: rows training sets, columns test corpora (NaN where a corpus trains)."""
        m = self.cells.pivot_table(index="train", columns="test", values=metric, aggfunc="mean")
        order = list(dict.fromkeys(self.cells["train"]))
        cols = sorted(set(self.cells["test"]), key=lambda c: next((i for i, t in enumerate(order) if t == c), len(order)))
        return m.reindex(index=order, columns=cols)

    def std(self, metric: str = "ua") -> pd.DataFrame:
        m = self.cells.pivot_table(index="train", columns="test", values=metric, aggfunc=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
        return m.reindex_like(self.matrix(metric))


def run_crosscorpus(
    base: Any,
    corpora: Sequence[str],
    *,
    leave_one_out: bool = False,
    seeds: Sequence[int] = (0,),
    within: bool = False,
    train: Callable[..., Any] | None = None,
    run_prefix: str | None = None,
    resources: Resources | None = None,
) -> CrossCorpusResult:
    """Train and test every (training set, seed); see the module docstring.

    Args:
        base: A :class:`~serray.training.spec.RunSpec` (model, features, labels, config).
        corpora: Corpora of the matrix (manifests in the work directory).
        leave_one_out: Train on every corpus but one instead of each corpus alone.
        seeds: Training seeds (the matrix is their mean).
        within: Also fill the diagonal with a within-corpus LOSO run of each corpus
            (single-corpus training sets only).
        train: The training function (default :func:`serray.training.run.train_run`).
        run_prefix: Run names ``<prefix>-train=<corpora>-seed<s>``.
        resources: Where every run trains (:class:`~serray.training.resources.Resources`),
            passed to ``train``.
    """
    from serray.manifest import load_manifests
    from serray.predictions import read_predictions
    from serray.training.run import train_run

    train = train or train_run
    sets = training_sets(corpora, leave_one_out)
    corpora = sorted({c for s in sets for c in s})
    man = load_manifests(base.workdir, corpora)
    corpus_of = dict(zip(man["utt_id"].astype(str), man["corpus"].astype(str)))
    prefix = run_prefix or f"crosscorpus-{base.model}-{base.labels}{'-loo' if leave_one_out else ''}"
    frames, runs = [], []
    for tr in sets:
        test = [c for c in corpora if c not in tr]
        for s in seeds:
            spec = base.replace(protocol="cross-corpus", corpora=tuple(corpora), train_corpora=tr, test_corpora=tuple(test), seed=int(s))
            name = f"{prefix}-train={'+'.join(tr)}-seed{int(s)}"
            res = train(spec, run_name=name, resources=resources)
            preds = read_predictions(base.workdir, [name])
            frames.append(score_by_corpus(preds, corpus_of, res.classes).assign(train="+".join(tr), run=name))
            runs.append(name)
            log.info("cross-corpus: trained on %s (seed %d), tested on %s", "+".join(tr), s, ", ".join(test))
            if within and len(tr) == 1:
                spec = base.replace(protocol="loso", corpora=tr, train_corpora=None, test_corpora=None, seed=int(s))
                name = f"{prefix}-within={tr[0]}-seed{int(s)}"
                res = train(spec, run_name=name, resources=resources)
                preds = read_predictions(base.workdir, [name])
                frames.append(score_by_corpus(preds, corpus_of, res.classes).assign(train=tr[0], run=name))
                runs.append(name)
    cells = pd.concat(frames, ignore_index=True)[["train", "test", "seed", "run", "n", "ua", "wa", "f1"]]
    return CrossCorpusResult(base.model, base.labels, cells, runs)


def _fmt_matrix(mean: pd.DataFrame, std: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    def cell(i: str, j: str) -> str:
        v = mean.loc[i, j]
        if pd.isna(v):
            return "–"
        return f"{100 * v:.1f}" + (f" ± {100 * std.loc[i, j]:.1f}" if n_seeds > 1 else "")

    out = pd.DataFrame([[cell(i, j) for j in mean.columns] for i in mean.index], index=mean.index, columns=mean.columns)
    out.index.name = "train \\ test"
    return out


def write_crosscorpus(result: CrossCorpusResult, out: str | Path) -> Path:
    """Write ``matrix.csv`` (UA, fractions), ``cells.csv``, ``matrix.md``, ``matrix.tex`` and ``heatmap.png/pdf``."""
    from serray.report.figures import heatmap_figure
    from serray.report.writer import latex_table

    out = Path(out)
    mean, std = result.matrix("ua"), result.std("ua")
    n_seeds = int(result.cells["seed"].nunique())
    io.write_text(mean.to_csv(), out / "matrix.csv")
    io.write_text(result.cells.to_csv(index=False), out / "cells.csv")
    shown = _fmt_matrix(mean, std, n_seeds)
    diagonal = "; diagonal: within-corpus LOSO" if any("-within=" in r for r in result.runs) else ""
    caption = (f"Cross-corpus UA (%) of {result.model}, label set {result.labels}: rows train, columns test"
               + (f"; mean ± std over {n_seeds} seeds" if n_seeds > 1 else "") + diagonal + ".")
    io.write_text(f"{caption}\n\n{shown.to_markdown()}\n", out / "matrix.md")
    io.write_text(latex_table(shown.reset_index()), out / "matrix.tex")
    heatmap_figure(100 * mean, f"{result.model} cross-corpus UA (%), {result.labels}{diagonal}", out / "heatmap", fmt="{:.1f}",
                   xlabel="test corpus", ylabel="training corpora")
    return out
