"""Comparison reports: numbers from the store, paired tests vs scipy, class sets, figures, caveats."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, accuracy_score, f1_score

from serray import io, predictions
from serray.cli import main
from serray.report import ReportOptions, write_report

from _report_helpers import CLASSES, store_manifest, write_record, write_system


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    m = store_manifest(tmp_path)
    write_system(tmp_path, m, "a", [0], 0.8, rng)
    write_system(tmp_path, m, "b", [0, 1, 2], 0.6, rng)
    write_system(tmp_path, m, "c", [0, 1], 0.5, rng)
    write_record(tmp_path, "a", seed=0)
    write_record(tmp_path, "b", seeds=[0, 1, 2], normalize="speaker")
    return tmp_path, m


def _ua_per_speaker(df, m):
    d = df[df["split"] == "test"].merge(m[["utt_id", "speaker"]], on="utt_id")
    per = d.groupby(["speaker", "seed"]).apply(lambda g: balanced_accuracy_score(g["label"], g["pred"]), include_groups=False)
    return per.groupby("speaker").mean()


def test_summary_numbers_equal_recomputed_from_store(store):
    w, m = store
    out = write_report(w, ["a", "b", "c"], options=ReportOptions(n_boot=200))
    summ = pd.read_csv(out / "summary.csv")
    for run in ("a", "b", "c"):
        df = predictions.read_predictions(w, [run])
        t = df[df["split"] == "test"]
        row = summ[summ["system"].str.startswith(run)].iloc[0]
        per_seed = t.groupby("seed").apply(lambda g: balanced_accuracy_score(g["label"], g["pred"]), include_groups=False)
        assert row["ua_pooled_mean"] == pytest.approx(per_seed.mean(), abs=1e-12)
        assert row["ua_pooled_std"] == pytest.approx(per_seed.std(ddof=1) if len(per_seed) > 1 else 0.0, abs=1e-12)
        wa = t.groupby("seed").apply(lambda g: accuracy_score(g["label"], g["pred"]), include_groups=False)
        f1 = t.groupby("seed").apply(lambda g: f1_score(g["label"], g["pred"], average="macro"), include_groups=False)
        assert row["wa_pooled_mean"] == pytest.approx(wa.mean(), abs=1e-12)
        assert row["f1_pooled_mean"] == pytest.approx(f1.mean(), abs=1e-12)
        fold = t.groupby(["seed", "fold"]).apply(lambda g: balanced_accuracy_score(g["label"], g["pred"]), include_groups=False)
        assert row["ua_fold_mean"] == pytest.approx(fold.groupby("seed").mean().mean(), abs=1e-12)
        f = t[t["utt_id"].isin(m.loc[m["gender"] == "f", "utt_id"])]
        ua_f = f.groupby("seed").apply(lambda g: balanced_accuracy_score(g["label"], g["pred"]), include_groups=False).mean()
        assert row["ua_gender=f"] == pytest.approx(ua_f, abs=1e-12)
        per_spk = pd.read_csv(out / "per_speaker.csv", index_col=0)
        col = [c for c in per_spk.columns if c.startswith(run)][0]
        np.testing.assert_allclose(per_spk[col].to_numpy(), (100 * _ua_per_speaker(df, m)).round(1).to_numpy())
    md = (out / "report.md").read_text()
    assert "UA pooled %" in md and "UA fold-avg %" in md and "Pooled" in md and "Fold-avg" in md


def test_paired_tests_agree_with_scipy(store):
    w, m = store
    out = write_report(w, ["a", "b", "c"], options=ReportOptions(n_boot=300, seed=5))
    tests = pd.read_csv(out / "pairwise.csv")
    assert len(tests) == 3
    ua = {r: _ua_per_speaker(predictions.read_predictions(w, [r]), m) for r in ("a", "b", "c")}
    for _, t in tests.iterrows():
        x, y = ua[t["a"].split(" ")[0]], ua[t["b"].split(" ")[0]]
        assert t["n_pairs"] == len(x) == 6
        assert t["p_ttest"] == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-12)
        assert t["t"] == pytest.approx(stats.ttest_rel(x, y).statistic, rel=1e-12)
        assert t["p_wilcoxon"] == pytest.approx(stats.wilcoxon(x, y).pvalue, rel=1e-12)
        assert t["mean_diff"] == pytest.approx((x - y).mean(), abs=1e-12)
        assert t["ci_low"] <= t["ua_diff"] <= t["ci_high"]
    again = pd.read_csv(write_report(w, ["a", "b", "c"], out=w / "again", options=ReportOptions(n_boot=300, seed=5)) / "pairwise.csv")
    pd.testing.assert_frame_equal(tests, again)
    assert "$\\pm$" in (out / "table.tex").read_text()


def test_significance_marks_in_tables(tmp_path):
    rng = np.random.default_rng(1)
    m = store_manifest(tmp_path, n_speakers=8)
    write_system(tmp_path, m, "good", [0], 0.95, rng)
    write_system(tmp_path, m, "bad", [0], 0.35, rng)
    out = write_report(tmp_path, ["good", "bad"])
    summ_md = (out / "report.md").read_text()
    p = pd.read_csv(out / "pairwise.csv")["p_wilcoxon"].iloc[0]
    assert p < 0.01
    assert re.search(r"\| bad .*\d\*\*", summ_md), summ_md
    assert "$^{**}$" in (out / "table.tex").read_text()


def test_adjust_pvalues_against_hand_computed_values():
    from serray.report.statistics import adjust_pvalues

    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # Holm, sorted 0.005 0.01 0.03 0.04 (m = 4): 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, 1*0.04 -> running max 0.06
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02, np.nan])
    # Benjamini-Hochberg: p_(i) * m / i = 0.02, 0.02, 0.04, 0.04, running min from the top
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02, np.nan])
    np.testing.assert_allclose(adjust_pvalues(p, "none"), p)
    np.testing.assert_allclose(adjust_pvalues([0.3, 0.5], "holm"), [0.6, 0.6])  # capped at 1 before the running max
    np.testing.assert_allclose(adjust_pvalues([0.6, 0.9], "holm"), [1.0, 1.0])
    with pytest.raises(ValueError, match="correction must be one of"):
        adjust_pvalues(p, "bonf")


def test_pairwise_p_values_adjusted_over_all_pairs(store):
    w, _ = store
    out = write_report(w, ["a", "b", "c"], options=ReportOptions(n_boot=50))
    tests = pd.read_csv(out / "pairwise.csv")
    cols = list(tests.columns)
    assert cols.index("p_ttest_adj") == cols.index("p_ttest") + 1
    assert cols.index("p_wilcoxon_adj") == cols.index("p_wilcoxon") + 1
    assert set(tests["correction"]) == {"holm"}
    for col in ("p_ttest", "p_wilcoxon"):
        raw = tests[col].to_numpy()
        m, order = len(raw), np.argsort(raw)
        holm = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * raw[order]))
        np.testing.assert_allclose(tests.loc[order, f"{col}_adj"].to_numpy(), holm)
    md = (out / "report.md").read_text()
    assert "Holm-Bonferroni over the 3 pairs" in md and "p adj. (Holm-Bonferroni) (Wilcoxon)" in md
    assert "p adj. (Holm-Bonferroni)" in (out / "pairwise.tex").read_text()
    bh = write_report(w, ["a", "b", "c"], out=w / "bh", options=ReportOptions(n_boot=50, correction="bh"))
    tests_bh = pd.read_csv(bh / "pairwise.csv")
    from scipy.stats import false_discovery_control

    np.testing.assert_allclose(tests_bh["p_wilcoxon_adj"], false_discovery_control(tests_bh["p_wilcoxon"]))
    assert "Benjamini-Hochberg" in (bh / "report.md").read_text()
    with pytest.raises(ValueError, match="correction must be one of"):
        ReportOptions(correction="bonferroni")


def test_marks_follow_the_adjusted_p_values(tmp_path):
    """A pair significant on its raw p but not after Holm over all pairs gets no stars."""
    from serray.report.comparison import format_pairwise, marks_against_best

    tests = pd.DataFrame({"a": ["x", "x", "y"], "b": ["y", "z", "z"], "unit": "speaker", "n_pairs": 8,
                          "mean_diff": 0.1, "t": 2.0, "p_ttest": [0.02, 0.04, 0.5], "w": 3.0,
                          "p_wilcoxon": [0.02, 0.04, 0.5], "ua_diff": 0.1, "ci_low": 0.0, "ci_high": 0.2,
                          "ci_level": 0.95, "n_boot": 10})
    from serray.report.comparison import with_adjusted

    holm = with_adjusted(tests, "holm")
    np.testing.assert_allclose(holm["p_wilcoxon_adj"], [0.06, 0.08, 0.5])
    table = format_pairwise(holm)
    assert table["p (Wilcoxon)"].tolist() == ["0.02", "0.04", "0.5"]
    assert table["p adj. (Holm-Bonferroni) (Wilcoxon)"].tolist() == ["0.06", "0.08", "0.5"]
    frame = pd.DataFrame({"system": ["x", "y", "z"], "ua_pooled_mean": [0.9, 0.5, 0.4]})
    marks, note = marks_against_best(frame, holm)
    assert marks == {"y": "", "z": ""} and "Holm-Bonferroni" in note
    marks, note = marks_against_best(frame, with_adjusted(tests, "none"))
    assert marks == {"y": "*", "z": "*"} and "raw p-values" in note


def test_report_cli_correction_option(store):
    w, _ = store
    res = CliRunner().invoke(main, ["report", str(w), "--runs", "a,b", "--correction", "bh", "--bootstrap", "20",
                                    "--out", str(w / "cli")])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(w / "cli" / "pairwise.csv")["correction"]) == {"bh"}
    bad = CliRunner().invoke(main, ["report", str(w), "--runs", "a,b", "--correction", "bonf"])
    assert bad.exit_code != 0 and "holm" in bad.output


def test_different_class_sets_fail_with_one_clear_message(tmp_path):
    rng = np.random.default_rng(2)
    m = store_manifest(tmp_path)
    write_system(tmp_path, m, "three", [0], 0.7, rng)
    write_system(tmp_path, m, "two", [0], 0.7, rng, classes=CLASSES[:2])
    r = CliRunner().invoke(main, ["report", str(tmp_path), "--runs", "three,two", "--compare"])
    assert r.exit_code == 1
    assert "different class sets" in r.output and "three:" in r.output and "two:" in r.output
    assert "Traceback" not in r.output


def test_compare_needs_two_runs(store):
    w, _ = store
    r = CliRunner().invoke(main, ["report", str(w), "--runs", "a", "--compare"])
    assert r.exit_code == 1 and "--compare needs at least two runs" in r.output


def test_caveats_named_in_tables_and_figure_titles(store, monkeypatch):
    from serray.report import figures

    w, _ = store
    titles = []
    real = figures.confusion_figure
    monkeypatch.setattr(figures, "confusion_figure", lambda cm, cl, title, stem: titles.append(title) or real(cm, cl, title, stem))
    out = write_report(w, ["a", "b"], options=ReportOptions(n_boot=50))
    md = (out / "report.md").read_text()
    assert "b (transductive)" in md and "normalize=speaker uses unlabelled test-speaker features" in md
    assert any(t.startswith("b (transductive)") for t in titles)
    assert pd.read_csv(out / "summary.csv")["system"].tolist() == ["a", "b (transductive)"]


def test_speaker_normalisation_named_once_and_an_ensemble_row_lists_its_members(store):
    """A record's own transductive_reason and its normalize=speaker give one caveat line, not
    two; an ensemble's row in the systems table names every member family, not the first."""
    from serray.commands.ensemble import write_ensemble_folder
    from serray.ensemble import members_from_predictions, run_ensemble_search
    from serray.training.resources import Resources
    from serray.training.spec import TRANSDUCTIVE_SPEAKER_NORM

    w, _ = store
    write_record(w, "a", seed=0, model="svm", features="egemaps", normalize="speaker",
                 transductive=True, transductive_reason=TRANSDUCTIVE_SPEAKER_NORM)
    write_record(w, "c", seeds=[0, 1], model="dcnn", features="mfb", normalize="speaker")
    members = members_from_predictions(predictions.read_predictions(w, ["a", "c"]), predictions.run_classes(w, "a"))
    res = run_ensemble_search(members, [3], resources=Resources(parallel=False), progress=False, selection="validation")
    write_ensemble_folder(res, members, w / "ensemble" / "ens")
    md = (write_report(w, ["a", "ensemble:ens"], options=ReportOptions(n_boot=50)) / "report.md").read_text()
    assert md.count("- **a**: transductive") == 1
    assert md.count("- **ensemble:ens**: transductive") == 1
    assert f"- **a**: transductive: {TRANSDUCTIVE_SPEAKER_NORM}" in md
    row = next(line for line in md.splitlines() if line.startswith("| ensemble:ens"))
    assert re.search(r"\|\s*svm, dcnn\s*\|\s*egemaps, mfb\s*\|", row), row


def test_tune_experiment_resolves_to_best_trial_and_ambiguous_runs_fail(tmp_path):
    from serray.report.sources import resolve_systems

    rng = np.random.default_rng(4)
    m = store_manifest(tmp_path)
    for tid, acc in (("t0", 0.5), ("t1", 0.8)):
        write_system(tmp_path, m, "exp", [0], acc, rng, config_id=tid)
    with pytest.raises(ValueError, match="holds 2 configurations"):
        resolve_systems(tmp_path, ["exp"])
    io.write_yaml({"model": "mlp", "trial_id": "t1", "features": "egemaps", "normalize": "global", "config": {}},
                  tmp_path / "tune" / "exp" / "best.yaml")
    io.write_json({"trial_id": "t0", "model": "mlp"}, tmp_path / "tune" / "exp" / "trials" / "t0.json")
    best, trial = resolve_systems(tmp_path, ["exp", "exp/t0"])
    assert (best.kind, set(best.predictions["config_id"])) == ("tune-best", {"t1"})
    assert (trial.kind, set(trial.predictions["config_id"])) == ("tune-trial", {"t0"})
    assert best.records[0]["features"] == "egemaps"
