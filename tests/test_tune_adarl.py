"""A tiny `serray tune adarl` on the synthetic corpus (spectrogram segments, gender domain)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from serray.cli import main


@pytest.mark.slow
def test_tiny_adarl_tune_on_synthetic_corpus(synth_copy, tmp_path):
    from serray.features import extract_features

    w = synth_copy
    extract_features(w, ["spectrogram"], num_actors=0, progress=False)
    space = tmp_path / "adarl_tiny.yaml"
    space.write_text(
        "model: adarl\npreset: reduced\nparams:\n"
        "  lr: {type: loguniform, low: 0.01, high: 0.2}\n"
        "  g1: {type: uniform, low: 0.0, high: 1.0}\n"
        "  batch_size: {type: fixed, value: 16}\n"
        "  epochs: {type: fixed, value: 2}\n"
    )
    r = CliRunner().invoke(main, ["tune", "adarl", "--workdir", str(w), "--protocol", "kfold", "--k", "2",
                                  "--num-samples", "2", "--space", str(space), "--name", "adarl_ci"])
    assert r.exit_code == 0, r.output
    board = pd.read_csv(w / "tune" / "adarl_ci" / "leaderboard.csv")
    assert len(board) == 2 and not board["status"].str.startswith("error").any()
    assert board["val_ua"].between(0, 1).all() and board["test_ua"].between(0, 1).all()
    best = yaml.safe_load((w / "tune" / "adarl_ci" / "best.yaml").read_text())
    assert best["model"] == "adarl" and best["features"] == "spectrogram" and best["config"]["epochs"] == 2
    assert best["config"]["freq_pool"] == 4  # the reduced preset filled what the space does not search


@pytest.mark.slow
def test_tiny_dcnn_tune_searches_the_frozen_layer_choice(synth_copy, tmp_path):
    """The `stages` choice is searched like any hyperparameter, stored in every trial record
    and in best.yaml, and each trial's epochs follow its plan."""
    import json

    from serray.features import extract_features

    w = synth_copy
    extract_features(w, ["mfb"], num_actors=0, progress=False)
    space = tmp_path / "dcnn_tiny.yaml"
    space.write_text(
        "model: dcnn\npreset: small\nparams:\n"
        "  lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n"
        "  stages: {type: choice, values: [all, 'all@2;fc+out@1*0.1', fc_conv]}\n"
        "  patience: {type: fixed, value: 0}\n"
        "  epochs: {type: fixed, value: 2}\n"
    )
    r = CliRunner().invoke(main, ["tune", "dcnn", "--workdir", str(w), "--protocol", "kfold", "--k", "2",
                                  "--num-samples", "3", "--space", str(space), "--name", "dcnn_ci", "--grace-period", "9"])
    assert r.exit_code == 0, r.output
    board = pd.read_csv(w / "tune" / "dcnn_ci" / "leaderboard.csv")
    assert len(board) == 3 and "config/stages" in board and not board["status"].str.startswith("error").any()
    expected = {"all": 2, "all@2;fc+out@1*0.1": 3, "fc_conv": 12}  # fc_conv: 2 + its own 10 fine-tuning epochs
    for rec in (json.loads(p.read_text()) for p in (w / "tune" / "dcnn_ci" / "trials").glob("*.json")):
        assert rec["config"]["stages"] in expected
        assert rec["epochs"] == expected[rec["config"]["stages"]]
    best = yaml.safe_load((w / "tune" / "dcnn_ci" / "best.yaml").read_text())
    assert best["config"]["stages"] in expected and best["features"] == "mfb"
