"""Figure of mgnas gate weights per domain (paper 001's Fig. 4) from run records.

:func:`gate_weights_table` averages the ``gate_weights`` of every fold's model record
(:meth:`serray.models.mgnas.MGNAS.fold_record`, stored under ``metrics.folds[i].model``
of a run record) over folds, one row per domain; :func:`plot_gate_weights` draws them as
grouped bars and writes a PNG. ``serray report`` can call it on a run record; it needs
only matplotlib and pandas.

Example:
    >>> folds = [{"model": {"experts": ["a", "b"], "gate_weights": {"de": {"n": 3, "a": 0.75, "b": 0.25}}}},
    ...          {"model": {"experts": ["a", "b"], "gate_weights": {"de": {"n": 3, "a": 0.25, "b": 0.75}}}}]
    >>> gate_weights_table(folds).to_dict()
    {'a': {'de': 0.5}, 'b': {'de': 0.5}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

__all__ = ["gate_weights_table", "plot_gate_weights"]


def _folds(source: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Fold dicts of a run record, or the list itself."""
    if isinstance(source, Mapping):
        return list(source.get("metrics", {}).get("folds", []))
    return list(source)


def gate_weights_table(source: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean gate weight per domain (rows) and expert (columns) over the folds.

    Args:
        source: A run record (dict with ``metrics.folds``) or its list of folds; each
            fold's ``model`` entry is an mgnas fold record.

    Raises:
        ValueError: No fold has gate weights (e.g. ``gating=none``).
    """
    rows = []
    for fold in _folds(source):
        rec = fold.get("model") or {}
        for domain, weights in (rec.get("gate_weights") or {}).items():
            rows.append({"domain": domain, **{e: weights[e] for e in rec.get("experts", []) if e in weights}})
    if not rows:
        raise ValueError("no fold record has gate_weights; train mgnas with --set gating=omoe, mmoe or nas")
    return pd.DataFrame(rows).groupby("domain", sort=False).mean()


def plot_gate_weights(source: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: str | Path,
                      labels: Mapping[str, str] | None = None, title: str = "mgnas gate weights per domain") -> Path:
    """Grouped bars of :func:`gate_weights_table` (one group per domain) written to ``path`` (PNG).

    Args:
        source: Run record or its folds.
        path: Output file.
        labels: Expert role -> display name (e.g. ``{"seq1": "mfb"}``).
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = gate_weights_table(source).rename(columns=dict(labels or {}))
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(table) * max(1, len(table.columns)) / 3, 3.2))
    table.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("mean gate weight")
    ax.set_xlabel("domain")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(title="expert", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
