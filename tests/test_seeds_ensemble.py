"""serray seeds then serray ensemble, through the CLI, on the synthetic corpus."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from serray.cli import main
from serray.ensemble import OPTIMISTIC_WARNING
from serray.predictions import read_predictions


@pytest.mark.slow
def test_seeds_then_ensemble(synth_copy, tmp_path):
    w = str(synth_copy)
    cfg = tmp_path / "best.yaml"
    cfg.write_text("model: mlp\nfeatures: egemaps\nprotocol: kfold\nk: 3\nconfig: {epochs: 4, hidden_sizes: [64]}\n")
    r = CliRunner().invoke(main, ["seeds", "mlp", "--workdir", w, "--config", str(cfg), "--n", "3",
                                  "--variant", "a:dropout=0.1", "--variant", "b:dropout=0.4"])
    assert r.exit_code == 0, r.output
    runs = next(ln for ln in r.output.splitlines() if ln.startswith("runs: "))[6:].split("  (")[0].split(", ")
    assert [x.rsplit("-", 1)[0] for x in runs] == ["seeds-mlp-egemaps-kfold-native-global-a", "seeds-mlp-egemaps-kfold-native-global-b"]
    df = read_predictions(w, runs)
    assert df.groupby("run")["seed"].nunique().to_dict() == {runs[0]: 3, runs[1]: 3}
    # fold-averaged UA/WA beside the pooled ones, printed and stored per seed
    assert "Fold-averaged UA/WA" in r.output
    rec = json.loads((synth_copy / "runs" / runs[0] / "record.json").read_text())
    assert 0 <= rec["metrics"]["test_ua_fold_mean"] <= 1 and {"ua_fold", "wa_fold"} <= set(rec["metrics"]["per_seed"][0])
    test = df[df["split"] == "test"]
    # every utterance once per (run, seed) in the test predictions
    assert (test.groupby(["run", "seed"])["utt_id"].agg(lambda s: s.is_unique)).all()
    # a second call skips what is done
    r2 = CliRunner().invoke(main, ["seeds", "mlp", "--workdir", w, "--config", str(cfg), "--n", "3",
                                   "--variant", "a:dropout=0.1", "--variant", "b:dropout=0.4"])
    assert r2.exit_code == 0 and "6 (variant, seed) pair(s) were already done" in r2.output

    r = CliRunner().invoke(main, ["ensemble", w, "--runs", ",".join(runs), "--k", "1-3", "--name", "e"])
    assert r.exit_code == 0, r.output
    out = synth_copy / "ensemble" / "e"
    for f in ("leaderboard.csv", "best_per_k.csv", "membership_mix.csv", "single_members.csv", "ua_vs_k.png", "summary.json"):
        assert (out / f).stat().st_size > 0
    best_k = pd.read_csv(out / "best_per_k.csv")
    assert best_k["k"].tolist() == [1, 2, 3]
    assert "selected on pooled validation data" in r.output

    r = CliRunner().invoke(main, ["ensemble", w, "--runs", ",".join(runs), "--k", "1-2", "--selection", "test-optimistic", "--name", "o"])
    assert r.exit_code == 0 and OPTIMISTIC_WARNING in r.output
    assert json.loads((synth_copy / "ensemble" / "o" / "summary.json").read_text())["note"] == OPTIMISTIC_WARNING

    r = CliRunner().invoke(main, ["ensemble", w, "--runs", runs[0], "--method", "greedy", "--name", "g"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["ensemble", w, "--runs", ",".join(runs), "--k", "1-2", "--nested", "--name", "n"])
    assert r.exit_code == 0 and "nested estimate" in r.output, r.output
    nested = pd.read_csv(synth_copy / "ensemble" / "n" / "nested.csv", comment="#")
    assert sorted(nested["fold"]) == [0, 1, 2] and set(nested["k"]) <= {1, 2}
    r = CliRunner().invoke(main, ["ensemble", w, "--runs", runs[0], "--method", "greedy", "--nested"])
    assert r.exit_code != 0 and "--nested estimates an exhaustive search" in r.output
    r = CliRunner().invoke(main, ["ensemble", w, "--runs", runs[0], "--k", "1-9"])
    assert r.exit_code == 1 and "only 3" in r.output


def test_unknown_bare_variant_is_refused_before_training(synth_copy):
    """A bare name the model does not define used to train the base config under that name."""
    w = str(synth_copy)
    r = CliRunner().invoke(main, ["seeds", "mlp", "--workdir", w, "--features", "egemaps", "--protocol", "kfold",
                                  "--k", "2", "--n", "1", "--variant", "mmoe"])
    assert r.exit_code != 0
    assert "model 'mlp' has no variant 'mmoe'" in r.output and "base" in r.output
    assert "Traceback" not in r.output
    assert not (synth_copy / "runs").exists() or not any((synth_copy / "runs").iterdir())
