"""Figure of mgnas gate weights per domain (paper 001's Fig. 4) from run records.

:func:`gate_weights_table` averages the ``gate_weights`` of every fold's model record
(:meth:`serray.models.mgnas.MGNAS.fold_record`, stored under ``metrics.folds[i].model``
of a run record) over folds, one row per domain, for one part (``test`` by default:
the evaluated utterances, as in the paper's figure; or ``validation``, ``train``);
:func:`plot_gate_weights` draws them as grouped bars and writes a PNG. ``serray report``
shows the same records generically (tables and heatmaps of ``gate_weights.<part>``).

Example:
    >>> folds = [{"model": {"experts": ["a", "b"], "gate_weights": {"test": {"de": [0.75, 0.25]}}}},
    ...          {"model": {"experts": ["a", "b"], "gate_weights": {"test": {"de": [0.25, 0.75]}}}}]
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


def _part_weights(rec: Mapping[str, Any], part: str) -> dict[str, dict[str, float]]:
    """Domain -> {expert: weight} of one fold record's part (also the older ``{domain:
    {n, expert: w}}`` records, which hold training utterances only)."""
    gw, experts = rec.get("gate_weights") or {}, list(rec.get("experts", []))
    if gw and all(isinstance(v, Mapping) and "n" in v for v in gw.values()):  # older records
        return {d: {e: w[e] for e in experts if e in w} for d, w in gw.items()} if part == "train" else {}
    return {d: dict(zip(experts, w)) for d, w in (gw.get(part) or {}).items()}


def gate_weights_table(source: Mapping[str, Any] | Sequence[Mapping[str, Any]], part: str = "test") -> pd.DataFrame:
    """Mean gate weight per domain (rows) and expert (columns) over the folds.

    Args:
        source: A run record (dict with ``metrics.folds``) or its list of folds; each
            fold's ``model`` entry is an mgnas fold record.
        part: Utterances the weights were averaged over: ``test``, ``validation`` or ``train``.

    Raises:
        ValueError: No fold has gate weights for ``part`` (e.g. ``gating=none``).
    """
    rows = [{"domain": d, **w} for fold in _folds(source) for d, w in _part_weights(fold.get("model") or {}, part).items()]
    if not rows:
        raise ValueError(f"no fold record has gate_weights of the {part!r} utterances; train mgnas with "
                         "--set gating=omoe, mmoe or nas")
    return pd.DataFrame(rows).groupby("domain", sort=False).mean()


def plot_gate_weights(source: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: str | Path,
                      labels: Mapping[str, str] | None = None, title: str = "", part: str = "test") -> Path:
    """Grouped bars of :func:`gate_weights_table` (one group per domain) written to ``path`` (PNG).

    Args:
        source: Run record or its folds.
        path: Output file.
        labels: Expert role -> display name (e.g. ``{"seq1": "mfb"}``).
        title: Figure title (default names the part).
        part: As in :func:`gate_weights_table`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = gate_weights_table(source, part).rename(columns=dict(labels or {}))
    title = title or f"mgnas gate weights per domain ({part} utterances)"
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
