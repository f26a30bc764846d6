"""Generic model-record tables: shapes are recognised without knowing any model family."""

from __future__ import annotations

import numpy as np
import pytest

from serray.report.model_records import collect, flatten, records_of_run


def test_flatten_sorts_by_shape():
    rec = {"fold": 3, "name": "test=x", "k": 2, "ok": True, "weights": [0.2, 0.8],
           "gate": {"emodb": [0.1, 0.9], "emovo": [0.7, 0.3]}, "ragged": {"a": [1.0], "b": [1.0, 2.0]},
           "groups": [{"weight": 0.5, "speakers": ["s1", "s2"]}], "nested": {"lr": 0.01}}
    scalars, vectors, matrices = flatten(rec)
    assert scalars == {"k": 2, "ok": True, "groups[0].weight": 0.5, "groups[0].speakers": "s1 s2", "nested.lr": 0.01}
    assert set(vectors) == {"weights", "ragged.a", "ragged.b"}
    assert matrices == {"gate": {"emodb": [0.1, 0.9], "emovo": [0.7, 0.3]}}


def test_matrix_mean_over_folds_with_missing_keys():
    items = [(0, 0, {"gate": {"a": [1.0, 0.0], "b": [0.5, 0.5]}}), (0, 1, {"gate": {"a": [0.0, 1.0]}}),
             (1, 0, {"gate": {"a": [0.5, 0.5], "b": [0.0, 1.0]}})]
    mean = collect(items).matrix_mean("gate")
    np.testing.assert_allclose(mean.loc["a"].to_numpy(), [0.5, 0.5])
    np.testing.assert_allclose(mean.loc["b"].to_numpy(), [0.25, 0.75])


def test_matrix_mean_of_an_entry_no_record_has_is_nan_without_a_warning():
    import warnings

    items = [(0, 0, {"gate": {"a": [1.0, float("nan")]}}), (0, 1, {"gate": {"a": [0.0, float("nan")]}})]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would raise here
        mean = collect(items).matrix_mean("gate")
    assert mean.loc["a"].iloc[0] == 0.5 and np.isnan(mean.loc["a"].iloc[1])


def test_records_of_train_and_seeds_runs():
    train = {"seed": 4, "metrics": {"folds": [{"fold": 0, "model": {"t": 1.0}}, {"fold": 1}, {"fold": 2, "model": {"t": 3.0}}]}}
    assert records_of_run(train) == [(4, 0, {"t": 1.0}), (4, 2, {"t": 3.0})]
    seeds = {"model_records": {"0": [{"fold": 0, "name": "f0", "t": 2.0}], "1": [{"fold": 1, "name": "f1", "t": 4.0}]}}
    parts = collect(records_of_run(seeds))
    assert parts.scalars[["seed", "fold", "t"]].values.tolist() == [[0, 0, 2.0], [1, 1, 4.0]]
    assert parts.scalar_summary().loc["t", "mean"] == pytest.approx(3.0)
    assert collect([]).empty
