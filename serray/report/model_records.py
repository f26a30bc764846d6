"""Generic tables of what models report per fold (``fold_record()``), whatever the family.

A run record keeps a model's per-fold dict under ``metrics.folds[i].model``; a seeds
record keeps ``model_records: {seed: [{fold, name, ...}, ...]}``. This module knows no
model family: it walks each dict and sorts what it finds by shape.

* scalars (numbers, text, booleans; also lists of text, joined) -> one row per
  (seed, fold) in a *scalar table*, columns named by their dotted path
  (``groups[0].weight``);
* a list of numbers -> a *vector*: one row per (seed, fold), one column per position;
* a dict of equal-length numeric lists (``{domain: [w1..wk]}``) -> a *matrix*: rows are
  the keys; the report shows its mean over folds and seeds as a table and a heatmap;
* lists of dicts and nested dicts are walked with ``[i]`` and ``.key`` paths;
* ``axis_names: {path: [name, ...]}`` names the columns of the vectors and matrices at
  or under ``path`` whose width matches (e.g. the experts of a gate-weight matrix);
  a name instead of a list (``"classes"``) takes that list from the run record
  (:func:`records_of_run`, e.g. ADARL's per-class centre distances); without it,
  columns are positions.

Example:
    >>> rec = {"gate": {"a": [0.2, 0.8], "b": [0.6, 0.4]}, "n_groups": 2, "layer_w": [0.1, 0.9]}
    >>> parts = collect([(0, 0, rec), (0, 1, rec)])
    >>> list(parts.scalars.columns), sorted(parts.matrices), sorted(parts.vectors)
    (['seed', 'fold', 'n_groups'], ['gate'], ['layer_w'])
    >>> parts.matrix_mean("gate").loc["a"].tolist()
    [0.2, 0.8]
    >>> named = collect([(0, 0, {**rec, "axis_names": {"gate": ["mfb", "egemaps"]}})])
    >>> list(named.matrix_mean("gate").columns)
    ['mfb', 'egemaps']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Iterable

import numpy as np
import pandas as pd

__all__ = ["ModelRecords", "collect", "records_of_run", "flatten"]

_SKIP_KEYS = ("fold", "name")
_AXIS_KEY = "axis_names"


def _is_num(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _numeric_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_num(x) for x in v)


def _matrix(v: Any) -> bool:
    if not isinstance(v, dict) or not v or not all(_numeric_list(x) for x in v.values()):
        return False
    return len({len(x) for x in v.values()}) == 1


def flatten(obj: Any, path: str = "") -> tuple[dict, dict, dict]:
    """``(scalars, vectors, matrices)`` of one fold record, keyed by dotted path.

    Example:
        >>> flatten({"a": 1, "g": [{"w": 0.5, "spk": ["s1", "s2"]}]})[0]
        {'a': 1, 'g[0].w': 0.5, 'g[0].spk': 's1 s2'}
    """
    scalars, vectors, matrices = {}, {}, {}
    if _matrix(obj) and path:
        matrices[path] = {str(k): [float(x) for x in v] for k, v in obj.items()}
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not path and (k in _SKIP_KEYS or k == _AXIS_KEY):
                continue
            s, ve, m = flatten(v, f"{path}.{k}" if path else str(k))
            scalars.update(s), vectors.update(ve), matrices.update(m)
    elif _numeric_list(obj):
        vectors[path] = [float(x) for x in obj]
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(x, (dict, list, tuple)) for x in obj):
        for i, v in enumerate(obj):
            s, ve, m = flatten(v, f"{path}[{i}]")
            scalars.update(s), vectors.update(ve), matrices.update(m)
    elif isinstance(obj, (list, tuple)):
        scalars[path] = " ".join(str(x) for x in obj)
    elif obj is None or isinstance(obj, (str, bool)) or _is_num(obj):
        scalars[path] = obj
    else:
        scalars[path] = str(obj)
    return scalars, vectors, matrices


@dataclass
class ModelRecords:
    """Everything :func:`collect` found, by shape."""

    scalars: pd.DataFrame
    vectors: dict[str, pd.DataFrame] = field(default_factory=dict)
    matrices: dict[str, list[pd.DataFrame]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.scalars.shape[1] <= 2 and not self.vectors and not self.matrices

    def scalar_summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds and folds of every numeric scalar."""
        num = self.scalars.drop(columns=["seed", "fold"]).select_dtypes("number")
        return pd.DataFrame({"mean": num.mean(), "std": num.std(ddof=1), "n": num.count()})

    def matrix_mean(self, path: str) -> pd.DataFrame:
        """Element-wise mean of a matrix over folds and seeds (rows: the dict's keys; records
        whose lists have another length than the first record's are left out)."""
        frames = [f for f in self.matrices[path] if list(f.columns) == list(self.matrices[path][0].columns)]
        rows = sorted(set().union(*(f.index for f in frames)))
        stack = np.stack([f.reindex(rows).to_numpy(float) for f in frames])
        count = (~np.isnan(stack)).sum(axis=0)  # an entry no record has stays NaN, without nanmean's warning
        mean = np.nansum(stack, axis=0) / np.maximum(count, 1)
        return pd.DataFrame(np.where(count > 0, mean, np.nan), index=rows, columns=frames[0].columns)


def collect(items: Iterable[tuple[int, int, dict]]) -> ModelRecords:
    """Gather ``(seed, fold, record)`` items into tables (see the module docstring)."""
    rows, vectors, matrices = [], {}, {}
    for seed, fold, rec in items:
        s, ve, m = flatten(rec)
        names = rec.get(_AXIS_KEY) if isinstance(rec.get(_AXIS_KEY), dict) else {}
        rows.append({"seed": seed, "fold": fold, **s})
        for path, v in ve.items():
            cols = _columns(path, len(v), names)
            vectors.setdefault(path, []).append({"seed": seed, "fold": fold, **dict(zip(cols, v))})
        for path, mat in m.items():
            cols = _columns(path, len(next(iter(mat.values()))), names)
            matrices.setdefault(path, []).append(pd.DataFrame.from_dict(mat, orient="index", columns=cols))
    scalars = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["seed", "fold"])
    return ModelRecords(scalars, {p: pd.DataFrame(v) for p, v in vectors.items()}, matrices)


def _columns(path: str, width: int, names: dict) -> list[str]:
    """Column names of a vector/matrix at ``path``: the ``axis_names`` entry of the longest
    matching path prefix whose length is ``width``, else positions."""
    for prefix in sorted(names, key=len, reverse=True):
        given = names[prefix]
        if (path == prefix or path.startswith(f"{prefix}.") or path.startswith(f"{prefix}[")) \
                and isinstance(given, (list, tuple)) and len(given) == width:
            return [str(n) for n in given]
    return [str(i) for i in range(width)]


def records_of_run(record: dict) -> list[tuple[int, int, dict]]:
    """``(seed, fold, model dict)`` items of a run record (train) or a seeds record; an
    ``axis_names`` entry that names a list of the run record (``"classes"``) becomes that list.

    Example:
        >>> rec = {"classes": ["neutral", "angry"], "model_records": {"0": [{"fold": 0, "d": [0.5, 0.2],
        ...        "axis_names": {"d": "classes"}}]}}
        >>> list(collect(records_of_run(rec)).vectors["d"].columns)
        ['seed', 'fold', 'neutral', 'angry']
    """
    items = []
    for f in (record.get("metrics") or {}).get("folds") or []:
        if isinstance(f.get("model"), dict) and f["model"]:
            items.append((int(record.get("seed", 0)), int(f.get("fold", len(items))), f["model"]))
    for seed, folds in (record.get("model_records") or {}).items():
        for f in folds:
            items.append((int(seed), int(f.get("fold", 0)), {k: v for k, v in f.items() if k not in _SKIP_KEYS}))
    return [(seed, fold, _resolve_axis_names(m, record)) for seed, fold, m in items]


def _resolve_axis_names(model: dict, record: dict) -> dict:
    names = model.get(_AXIS_KEY)
    if not isinstance(names, dict) or not any(isinstance(v, str) for v in names.values()):
        return model
    resolved = {k: record.get(v) if isinstance(v, str) else v for k, v in names.items()}
    return {**model, _AXIS_KEY: {k: v for k, v in resolved.items() if isinstance(v, (list, tuple))}}
