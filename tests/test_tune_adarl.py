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
        "  variant: {type: choice, values: [attention, backbone]}\n"
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
