"""The full report: every figure written (PNG and PDF), model records, ensembles, Tune progress,
and the self-contained HTML page opened in a real headless browser (skipped without one)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from serray import io, predictions
from serray.cli import main
from serray.training.resources import Resources

from _report_helpers import store_manifest, write_record, write_system


def _ensemble(w, selection):
    from serray.commands.ensemble import write_ensemble_folder
    from serray.ensemble import members_from_predictions, run_ensemble_search

    df = predictions.read_predictions(w, ["m1", "m2"])
    members = members_from_predictions(df, predictions.run_classes(w, "m1"))
    res = run_ensemble_search(members, [1, 2, 3], resources=Resources(parallel=False), progress=False, selection=selection)
    write_ensemble_folder(res, members, w / "ensemble" / f"ens-{selection}")


def _trials(w):
    d = w / "tune" / "exp"
    for i, (val, fin) in enumerate([(0.5, "completed"), (0.42, "stopped by scheduler"), (0.61, "completed")]):
        io.write_json({"trial_id": f"t{i}", "val_ua_final": val, "finished": fin, "started_at": 1000.0 + 5 * i,
                       "ended_at": 1060.0 + 40 * i, "epochs": 4 - 2 * (fin != "completed"), "test_ua": val - 0.05},
                      d / "trials" / f"t{i}.json")
    return d


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("full")
    rng = np.random.default_rng(3)
    m = store_manifest(tmp_path)
    write_system(tmp_path, m, "m1", [0, 1], 0.7, rng)
    write_system(tmp_path, m, "m2", [0, 1], 0.6, rng)
    write_system(tmp_path, m, "solo", [0], 0.65, rng)
    gate = {"syn": [0.2, 0.8], "other": [0.6, 0.4]}
    folds = [{"fold": f, "name": f"test=s{f}", "val_ua": 0.5,
              "model": {"n_groups": 2, "gate": gate, "layer_weights": [0.1, 0.3, 0.6],
                        "groups": [{"weight": 0.4, "speakers": ["a", "b"]}, {"weight": 0.6, "speakers": ["c"]}]}}
             for f in range(6)]
    write_record(tmp_path, "solo", seed=0, metrics={"folds": folds})
    write_record(tmp_path, "m1", seeds=[0, 1], model_records={"0": [{"fold": 0, "name": "x", "temperature": 1.5}],
                                                               "1": [{"fold": 0, "name": "x", "temperature": 1.7}]})
    _ensemble(tmp_path, "validation")
    _ensemble(tmp_path, "test-optimistic")
    tune = _trials(tmp_path)
    r = CliRunner().invoke(main, ["report", str(tmp_path), "--runs", "solo,m1,ensemble:ens-validation,ensemble:ens-test-optimistic",
                                  "--tune", str(tune), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    return tmp_path / "reports" / "comparison"


def _figures(out):
    return re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (out / "report.md").read_text())


def test_every_figure_file_is_written_and_non_empty(full):
    figs = _figures(full)
    kinds = {re.sub(r"__.*", "", f.removesuffix(".png")) for f in figs}
    assert {"confusion", "per_gender", "per_speaker", "ensemble_size", "ensemble_mix", "tune", "model"} <= kinds, kinds
    for f in figs:
        for ext in (".png", ".pdf"):
            path = (full / f).with_suffix(ext)
            assert path.stat().st_size > 1000, path
    assert (full / "table.tex").stat().st_size > 0 and (full / "pairwise.tex").stat().st_size > 0


def test_model_records_rendered_generically(full):
    md = (full / "report.md").read_text()
    assert "`gate`, mean over 6 fold record(s)" in md and "`layer_weights` per seed and fold" in md
    scalars = pd.read_csv(full / "model__solo__c0__scalars.csv")
    assert set(scalars.columns) == {"seed", "fold", "n_groups", "groups[0].weight", "groups[0].speakers",
                                    "groups[1].weight", "groups[1].speakers"}
    assert scalars["groups[0].speakers"].iloc[0] == "a b" and len(scalars) == 6
    seeds = pd.read_csv(full / "model__m1__c0__scalars.csv")
    assert seeds["temperature"].tolist() == [1.5, 1.7]


def test_optimistic_ensemble_named_and_tune_progress(full):
    md = (full / "report.md").read_text()
    assert "ensemble:ens-test-optimistic (optimistic)" in md
    assert "selected on test UA" in md
    assert "3 trials, 1 stopped early by ASHA" in md
    t = pd.read_csv(full / "tune__exp.csv")
    assert t["best_so_far"].tolist() == [0.5, 0.5, 0.61]


def test_html_is_self_contained(full):
    page = (full / "report.html").read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]*)"', page)
    assert len(srcs) == len(_figures(full)) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<table" in page and "http" not in re.sub(r"data:[^\"]*", "", page).replace("http-equiv", "")


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless browser installed (apt-get install chromium) to open report.html")
def test_html_opens_in_headless_browser(full, tmp_path):
    page = (full / "report.html").read_text()
    probe = ("<script>window.addEventListener('load', () => { const im = [...document.images];"
             "const ok = im.filter(i => i.complete && i.naturalWidth > 0).length;"
             "document.body.insertAdjacentHTML('beforeend', `<p id=probe>images ${ok}/${im.length}</p>`); });</script>")
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
           probed.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    n = len(_figures(full))
    assert f"images {n}/{n}" in dom, dom[-500:]
    assert "serray report" in dom
