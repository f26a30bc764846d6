"""Acceptance on real EmoDB: 7-class LOSO, eGeMAPS, SVM (skipped without ../shared/data)."""

from __future__ import annotations

import pandas as pd
import pytest

from serray.predictions import read_predictions
from serray.training.resources import Resources


@pytest.mark.slow
@pytest.mark.realdata
def test_emodb_svm_egemaps_loso(emodb_dir, tmp_path):
    from serray.corpora import prepare_corpus
    from serray.features import extract_features
    from serray.training.run import train_run
    from serray.training.spec import RunSpec

    prepare_corpus("emodb", emodb_dir, tmp_path, check_audio=False)
    extract_features(tmp_path, ["egemaps"], num_actors=0, progress=False)
    res = train_run(RunSpec(tmp_path, "svm", features="egemaps", protocol="loso", normalize="global"), resources=Resources(parallel=False), run_name="g")
    spk = train_run(RunSpec(tmp_path, "svm", features="egemaps", protocol="loso", normalize="speaker"), resources=Resources(parallel=False), run_name="s")
    # a plain scikit-learn script on this copy gives pooled UA 0.56-0.58 with global normalisation
    assert res.pooled["ua"] >= 0.56, res.pooled
    assert spk.pooled["ua"] >= res.pooled["ua"], (spk.pooled, res.pooled)
    assert len(res.classes) == 7
    test = read_predictions(tmp_path, runs=["g"], split="test")
    assert len(test) == 535 and test["utt_id"].is_unique
    folds = pd.read_parquet(tmp_path / "runs" / "g" / "folds.parquet")
    folds["speaker"] = folds["utt_id"].str.slice(6, 8)
    for _, f in folds.groupby("fold"):
        assert not set(f.loc[f["split"] == "test", "speaker"]) & set(f.loc[f["split"] != "test", "speaker"])
