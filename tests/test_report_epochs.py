"""Epochs in records and reports: every torch fold's epochs and the epoch early stopping kept are
recorded (train and seeds runs), and the report says how many fold models were still improving on
their last epoch, the sign that the epoch budget rather than validation ended training."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from serray.report.writer import write_report
from serray.training.resources import Resources
from serray.training.spec import RunSpec
from serray.workdir import Workdir

KFOLD = dict(features="egemaps", protocol="kfold", k=3, corpora=["synth_a"])


@pytest.fixture(scope="module")
def runs(synth_workdir, tmp_path_factory):
    """mlp seeds 0-1 with a 2-epoch budget (no room for patience) and with 12 (base), an svm
    train run and an mlp train run, on synth_a's 3-fold speaker k-fold."""
    from serray.training.run import train_run
    from serray.training.seeds import train_seeds

    w = tmp_path_factory.mktemp("epochs") / "w"
    shutil.copytree(synth_workdir, w, symlinks=True)
    here = Resources(parallel=False)
    spec = RunSpec(str(w), "mlp", preset="small", config={"epochs": 12, "patience": 2}, **KFOLD)
    train_seeds(spec, seeds=[0, 1], variants={"short": {"epochs": 2}, "base": {}}, run_prefix="mlp",
                resources=here, progress=False, keep_models=False)
    train_run(RunSpec(str(w), "svm", **KFOLD), run_name="svm-r", resources=here)
    train_run(RunSpec(str(w), "mlp", preset="small", config={"epochs": 12, "patience": 2}, seed=3, **KFOLD),
              run_name="mlp-r", resources=here)
    return w


def _record(w, run):
    return json.loads(Workdir(w).run_record(run).read_text())


def test_records_hold_every_torch_folds_epochs_and_none_for_scikit_learn(runs):
    short, long_ = _record(runs, "mlp-short"), _record(runs, "mlp-base")
    epochs = short["metrics"]["fold_epochs"]
    assert sorted((e["seed"], e["fold"]) for e in epochs) == [(s, f) for s in (0, 1) for f in range(3)]
    assert all(e["epochs"] == 2 and 1 <= e["best_epoch"] <= 2 for e in epochs)
    assert all(e["best_epoch"] <= e["epochs"] <= 12 for e in long_["metrics"]["fold_epochs"])
    train = _record(runs, "mlp-r")["metrics"]
    assert [(e["fold"], e["epochs"], e["best_epoch"]) for e in train["fold_epochs"]] == \
        [(f["fold"], f["epochs"], f["best_epoch"]) for f in train["folds"]]
    assert {e["seed"] for e in train["fold_epochs"]} == {3}
    assert "fold_epochs" not in _record(runs, "svm-r")["metrics"]
    assert "model_records" not in short, "an mlp reports nothing per fold: no model-record section"


def test_records_name_the_cpu_every_torch_seed_trained_on(runs):
    """The same seed and thread count round differently on another CPU model (a recurrent
    model's training can then end elsewhere), so records say which CPU each seed used."""
    from serray.training.interface import cpu_name

    assert _record(runs, "mlp-short")["cpus"] == {"0": [cpu_name()], "1": [cpu_name()]}
    assert _record(runs, "mlp-r")["cpus"] == [cpu_name()]
    assert _record(runs, "svm-r")["cpus"] is None and "cpus" not in _record(runs, "svm-r")["metrics"]
    assert cpu_name().endswith(")"), "torch trained here, so the kernel level is named"


def test_report_summarises_the_epochs_and_flags_a_budget_that_ended_training(runs, tmp_path):
    out = write_report(runs, ["mlp-short", "mlp-base", "svm-r"], out=tmp_path / "rep")
    summary = pd.read_csv(out / "summary.csv").set_index("kind", drop=False)
    rows = {r["system"].split(" ")[0]: r for _, r in summary.iterrows()}
    short, long_, svm = rows["mlp-short"], rows["mlp-base"], rows["svm-r"]
    epochs = _record(runs, "mlp-short")["metrics"]["fold_epochs"]
    at_last = sum(e["best_epoch"] == e["epochs"] for e in epochs) / len(epochs)
    assert short["fold_models_with_epochs"] == 6 and short["best_at_last_epoch"] == pytest.approx(at_last)
    assert short["best_epoch_max"] <= 2 and long_["best_epoch_max"] <= 12
    assert pd.isna(svm["best_epoch_median"]), "scikit-learn models have no epochs"
    text = (out / "report.md").read_text()
    assert text.count("Epochs: early stopping kept epoch") == 2
    from serray.training.interface import cpu_name

    assert text.count(f"Trained on: {cpu_name()} (seeds 0, 1).") == 2  # mlp-short and mlp-base; none for the svm
    assert "over 6 fold model(s)" in text


def test_epoch_line_names_a_budget_that_ended_most_folds_and_a_fixed_count():
    from serray.report.comparison import epoch_summary
    from serray.report.writer import _epochs_text

    capped = epoch_summary([{"epochs": 8, "best_epoch": 8}] * 3 + [{"epochs": 8, "best_epoch": 3}])
    assert "3 of 4 still improved on their last epoch (the epoch budget" in _epochs_text(capped, False)
    stopped = epoch_summary([{"epochs": 9, "best_epoch": 4}] * 3 + [{"epochs": 8, "best_epoch": 8}])
    assert _epochs_text(stopped, False).endswith("1 of 4 still improved on their last epoch.")
    assert "a fixed count (early_stop=none" in _epochs_text(epoch_summary([{"epochs": 5, "best_epoch": 5}]), True)
    assert epoch_summary([]) == {}
