"""Fitted scikit-learn estimators as plain arrays and JSON: saved without pickle, rebuilt from an allow-list.

A fitted estimator's attributes (``vars(estimator)``) are split into numeric arrays (an
``.npz`` read with ``allow_pickle=False``) and JSON values (numbers, strings, booleans,
``None``, lists, tuples and dicts of them). Loading builds a fresh estimator of an
allow-listed class (:data:`ALLOWED`) and sets those attributes: no code from the file
runs. Any other class, or an attribute of another type, is refused with one line.

Example:
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> x, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    >>> est = LogisticRegression().fit(x, y)
    >>> meta, arrays = estimator_arrays(est)
    >>> meta["class"]
    'LogisticRegression'
    >>> bool(np.array_equal(rebuild_estimator(meta, arrays).decision_function(x), est.decision_function(x)))
    True
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["ALLOWED", "estimator_arrays", "rebuild_estimator"]


def _allowed() -> dict[str, type]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    return {c.__name__: c for c in (SVC, LinearSVC, LogisticRegression, StandardScaler)}


#: The estimator classes a kept model may hold (those serray's scikit-learn models build,
#: :mod:`serray.models.sklearn_baselines`, and the linear pieces commonly around them).
ALLOWED = ("SVC", "LinearSVC", "LogisticRegression", "StandardScaler")


def _json_value(key: str, value: Any) -> Any:
    """A JSON-able encoding of ``value`` (tuples and non-string dict keys tagged)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_json_value(key, v) for v in value]}
    if isinstance(value, list):
        return [_json_value(key, v) for v in value]
    if isinstance(value, dict):
        return {"__items__": [[_json_value(key, k), _json_value(key, v)] for k, v in value.items()]}
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return _json_value(key, value.item())
    raise ValueError(f"estimator attribute {key!r} is a {type(value).__name__}, which a kept model cannot hold "
                     f"without pickle; only arrays, numbers, strings and lists/dicts of them")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {_from_json(k): _from_json(v) for k, v in value["__items__"]}
    return value


def estimator_arrays(estimator: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a fitted estimator of an allowed class.

    Raises:
        ValueError: A class outside :data:`ALLOWED`, or an attribute that is neither a
            numeric array nor a JSON value.
    """
    name = type(estimator).__name__
    if name not in ALLOWED or _allowed()[name] is not type(estimator):
        raise ValueError(f"estimator {type(estimator).__module__}.{name} cannot be kept; allowed classes: {list(ALLOWED)}")
    attrs: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    scalars: list[str] = []
    for key, value in vars(estimator).items():
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise ValueError(f"estimator attribute {key!r} is an object array; a kept model holds numeric arrays only")
            arrays[key] = value
        elif isinstance(value, np.generic) and np.asarray(value).dtype.kind in "biuf":
            arrays[key] = np.asarray(value)
            scalars.append(key)
        else:
            attrs[key] = _json_value(key, value)
    return {"class": name, "attrs": attrs, "scalars": scalars}, arrays


def rebuild_estimator(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """A fitted estimator from :func:`estimator_arrays`'s output (no code from the file runs).

    Raises:
        ValueError: A class outside :data:`ALLOWED`.
    """
    name = str(meta.get("class"))
    if name not in ALLOWED:
        raise ValueError(f"estimator class {name!r} is not allowed in a kept model; allowed: {list(ALLOWED)}")
    cls = _allowed()[name]
    est = cls.__new__(cls)
    state = {k: _from_json(v) for k, v in dict(meta.get("attrs", {})).items()}
    scalars = set(meta.get("scalars", []))
    for key, arr in arrays.items():
        state[key] = np.asarray(arr)[()] if key in scalars else np.asarray(arr)
    est.__dict__.update(state)
    return est
