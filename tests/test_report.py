"""Report tables: pooled vs per-fold UA, per-group UA, confusion, files written."""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner

from serray import manifest, predictions
from serray.cli import main
from serray.report import evaluate_predictions


def _store(tmp_path, rng):
    classes = ["angry", "neutral", "sad"]
    utts = [f"c/{i}" for i in range(60)]
    man = pd.DataFrame({"utt_id": utts, "path": [f"/x/{i}.wav" for i in range(60)], "corpus": "c",
                        "speaker": [f"c_{i % 6}" for i in range(60)], "emotion": [classes[i % 3] for i in range(60)],
                        "gender": ["f" if i % 6 < 3 else "m" for i in range(60)]})
    manifest.write_manifest(man, tmp_path, "c")
    for seed in (0, 1):
        rows = []
        for i, u in enumerate(utts):
            y = classes[i % 3]
            p = y if rng.random() < 0.7 else classes[(i + 1) % 3]
            rows.append({"fold": i % 6, "split": "test", "utt_id": u, "label": y, "pred": p, "logits": [0.0, 0.0, 0.0]})
        predictions.write_predictions(tmp_path, pd.DataFrame(rows), run="r1", config_id="c0", seed=seed, classes=classes)
    return man, classes


def test_report_numbers_match_metrics(tmp_path):
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    man, classes = _store(tmp_path, np.random.default_rng(0))
    df = predictions.read_predictions(tmp_path)
    rep = evaluate_predictions(df, classes, man)[0]
    per_seed = [balanced_accuracy_score(g["label"], g["pred"]) for _, g in df.groupby("seed")]
    assert rep.summary["ua_pooled_mean"] == np.mean(per_seed)
    assert rep.summary["ua_pooled_std"] == np.std(per_seed, ddof=1)
    assert rep.summary["n_folds"] == 6 and rep.summary["n_seeds"] == 2
    np.testing.assert_array_equal(rep.confusion, confusion_matrix(df["label"], df["pred"], labels=classes))
    f = df[df["utt_id"].isin(man.loc[man["gender"] == "f", "utt_id"])]
    ua_f = np.mean([balanced_accuracy_score(g["label"], g["pred"]) for _, g in f.groupby("seed")])
    got = rep.per_group.set_index(["column", "group"]).loc[("gender", "f"), "ua"]
    assert abs(got - ua_f) < 1e-12


def test_report_cli_writes_files(tmp_path):
    _store(tmp_path, np.random.default_rng(1))
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "reports" / "r1"
    for name in ("report.md", "summary.csv", "table.tex", "confusion__r1__c0.png", "per_fold__r1__c0.csv"):
        assert (out / name).stat().st_size > 0
    assert "UA pooled %" in (out / "report.md").read_text() and "UA fold-avg %" in (out / "report.md").read_text()
    assert "\\begin{tabular}" in (out / "table.tex").read_text()


def test_report_empty_store_is_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "predictions store is empty" in r.output
