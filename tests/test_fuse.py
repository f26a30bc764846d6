"""`serray fuse`: retrained systems reproduce the stored logits; intermediate beside late fusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.ensemble.intermediate import _fold_features, fuse_intermediate, load_systems, system_embeddings
from serray.predictions import read_predictions, write_predictions
from serray.training.experiment import prepare_experiment
from serray.training.run import config_id, runs_dir
from serray.training.spec import RunSpec
from serray.training.trainer import check_config, fold_trainer

TINY = {"fe_hidden": [8], "head_hidden": 8, "epochs": 3, "patience": 0, "domain": "gender*corpus"}


def _store_systems(w: str, run_name: str, overrides: dict, seeds=(0, 1)) -> None:
    """What `serray seeds` stores (predictions per seed + run record), trained in-process."""
    run = RunSpec(w, "dmf", features="egemaps", protocol="kfold", k=3, config={**TINY, **overrides})
    cfg = check_config("dmf", run.resolved_config())
    exp = prepare_experiment(run, cfg)
    cid = config_id("dmf", cfg)
    torch.set_num_threads(1)
    for s in seeds:
        res = [fold_trainer("dmf", cfg, exp.inputs, f, normalize="global", seed=s, device="cpu").run() for f in exp.folds]
        write_predictions(w, pd.concat([r.predictions_frame() for r in res]), run=run_name, config_id=cid, seed=s, classes=exp.classes)
    io.write_json({"run": run_name, "model": "dmf", "config": cfg, "config_id": cid, **run.record()}, runs_dir(w) / run_name / "record.json")


@pytest.fixture
def fused_workdir(synth_copy):
    w = str(synth_copy)
    _store_systems(w, "r-mtl", {"gamma": 1.0})
    _store_systems(w, "r-dann", {"gamma": -1.0}, seeds=(0,))
    return w


def test_retrained_systems_match_the_stored_logits_and_give_embeddings(fused_workdir):
    w = fused_workdir
    stored = read_predictions(w, ["r-mtl"])
    systems = load_systems(w, ["r-mtl"], stored)
    assert [s.name.split("/")[2] for s in systems] == ["0", "1"]
    emb, exp = system_embeddings(w, systems[1], stored)
    assert emb.max_logit_diff < 1e-5
    for fold in exp.folds:
        z = emb.folds[fold.index]
        assert z.shape == (len(emb.utt_ids), 8) and np.isfinite(z).all()  # kfold: every utterance in the fold
    # the concatenation of two systems is twice as wide; the new classifier trains per fold
    emb0, _ = system_embeddings(w, systems[0], stored)
    assert _fold_features([emb0, emb], 0).data.shape == (len(emb.utt_ids), 16)
    results, _ = fuse_intermediate(exp, [emb0, emb], seed=0, ec_config={"epochs": 3})
    assert [r.index for r in results] == [f.index for f in exp.folds]
    assert all(set(r.test_ids) == set(f.test) for r, f in zip(results, exp.folds))


def test_fuse_command_reports_intermediate_beside_late(fused_workdir):
    w = fused_workdir
    r = CliRunner().invoke(main, ["fuse", w, "--runs", "r-mtl,r-dann", "--mode", "intermediate", "--k", "1-2", "--name", "f"])
    assert r.exit_code == 0, r.output
    summary = json.loads((Path(w) / "fusion" / "f" / "summary.json").read_text())
    rows = pd.DataFrame(summary["rows"])
    assert sorted(rows["fusion"].unique()) == ["intermediate (concat FE + new EC)", "late (sum of logits)"]
    assert rows.groupby("fusion")["systems"].apply(list).map(len).tolist() == [2, 2]
    assert rows.iloc[0]["systems"] == "all 3" and rows.iloc[0]["n"] == 3
    assert summary["max_retrained_logit_diff"] < 1e-5 and "validation" in summary["note"]
    assert "retrained systems vs stored logits" in r.output


def test_fuse_late_mode_needs_no_retraining_and_bad_runs_fail(fused_workdir):
    r = CliRunner().invoke(main, ["fuse", fused_workdir, "--runs", "r-mtl", "--mode", "late"])
    assert r.exit_code == 0, r.output
    assert "late (sum of logits)" in r.output and "concat FE" not in r.output and "retrained" not in r.output
    r = CliRunner().invoke(main, ["fuse", fused_workdir, "--runs", "nope"])
    assert r.exit_code == 1 and "no predictions" in r.output
