"""`serray crosscorpus`: one cross-corpus run per training set, the matrix from the store, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import balanced_accuracy_score

from serray.cli import main
from serray.manifest import write_manifest
from serray.predictions import read_predictions
from serray.report.crosscorpus import run_crosscorpus, training_sets, write_crosscorpus
from serray.training.spec import RunSpec
from serray.training.resources import Resources

from _training_helpers import synth_manifest, vector_features


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    parts = [synth_manifest(n_speakers=4, per_class=3, corpus=c) for c in ("ca", "cb", "cc")]
    for c, m in zip(("ca", "cb", "cc"), parts):
        write_manifest(m, tmp_path, c)
    fs = vector_features(pd.concat(parts, ignore_index=True))

    def fake_load(workdir, set_name, manifest, params=None):
        keep = set(manifest["utt_id"])
        idx = [i for i, u in enumerate(fs.utt_ids) if u in keep]
        return type(fs)(fs.kind, [fs.utt_ids[i] for i in idx], fs.data[idx], missing=[])

    import serray.features

    monkeypatch.setattr(serray.features, "load_features", fake_load)
    return tmp_path, pd.concat(parts, ignore_index=True)


def test_training_sets_and_bad_corpora():
    assert training_sets(["a", "b"]) == [("a",), ("b",)]
    with pytest.raises(ValueError, match="at least two different corpora"):
        training_sets(["a"])


def test_matrix_equals_store_and_validation_inside_training_corpora(workdir):
    w, m = workdir
    base = RunSpec(w, "svm", features="vec")
    res = run_crosscorpus(base, ["ca", "cb", "cc"], leave_one_out=True, resources=Resources(parallel=False))
    mat = res.matrix()
    assert list(mat.index) == ["cb+cc", "ca+cc", "ca+cb"] and sorted(mat.columns) == ["ca", "cb", "cc"]
    corpus = dict(zip(m["utt_id"], m["corpus"]))
    for run, train in zip(res.runs, mat.index):
        test = read_predictions(w, [run])
        test = test[test["split"] == "test"]
        held = [c for c in ("ca", "cb", "cc") if c not in train.split("+")]
        assert {corpus[u] for u in test["utt_id"]} == set(held)
        ua = balanced_accuracy_score(test["label"], test["pred"])
        assert mat.loc[train, held[0]] == pytest.approx(ua, abs=1e-12)
        for c in train.split("+"):
            assert np.isnan(mat.loc[train, c])
        folds = pd.read_parquet(w / "runs" / run / "folds.parquet")
        spk = dict(zip(m["utt_id"], m["speaker"]))
        part = {s: set(folds.loc[folds["split"] == s, "utt_id"].map(spk)) for s in ("train", "validation")}
        assert part["validation"] and not part["validation"] & part["train"]
        assert {corpus[u] for u in folds.loc[folds["split"] != "test", "utt_id"]} == set(train.split("+"))
    out = write_crosscorpus(res, w / "xc")
    for name in ("matrix.csv", "matrix.md", "matrix.tex", "cells.csv", "heatmap.png", "heatmap.pdf"):
        assert (out / name).stat().st_size > 0
    assert "train \\ test" in (out / "matrix.md").read_text()


def test_cli_prints_matrix(workdir):
    w, _ = workdir
    r = CliRunner().invoke(main, ["crosscorpus", "svm", "--workdir", str(w), "--corpora", "ca,cb", "--labels", "native",
                                  "--features", "vec", "--sequential", "--seeds", "0,1", "--within"])
    assert r.exit_code == 0, r.output
    assert "| ca " in r.output and "±" in r.output and "diagonal: within-corpus LOSO" in r.output
    cells = pd.read_csv(w / "crosscorpus" / "crosscorpus-svm-native" / "cells.csv")
    assert len(cells) == 8 and set(cells["seed"]) == {0, 1}
    diag = cells[cells["train"] == cells["test"]]
    assert len(diag) == 4 and diag["run"].str.contains("-within=").all()
    loso = read_predictions(w, ["crosscorpus-svm-native-within=ca-seed0"])
    assert loso["fold"].nunique() == 4  # one fold per speaker of corpus ca
    bad = CliRunner().invoke(main, ["crosscorpus", "svm", "--workdir", str(w), "--corpora", "ca,nope", "--features", "vec",
                                    "--labels", "native", "--sequential"])
    assert bad.exit_code == 1 and "nope" in bad.output and "Traceback" not in bad.output
