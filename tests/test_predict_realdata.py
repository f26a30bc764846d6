"""Real corpora: an eGeMAPS svm trained on a small EmoDB subset, exported, predicts EMOVO files
from a fresh process with no work directory (skipped without ../shared/data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from serray.training.resources import Resources

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
def test_emodb_export_predicts_emovo_in_a_fresh_process(emodb_dir, emovo_dir, tmp_path):
    from serray.artifacts import export_models
    from serray.corpora import prepare_corpus
    from serray.features import extract_features
    from serray.manifest import load_manifests, write_manifest
    from serray.training.run import train_run
    from serray.training.spec import RunSpec

    w = tmp_path / "w"
    prepare_corpus("emodb", emodb_dir, w, check_audio=False)
    m = load_manifests(w)
    small = m[m["speaker"].isin(sorted(m["speaker"].unique())[:4])].groupby(["speaker", "emotion"]).head(3)
    write_manifest(small.reset_index(drop=True), w, "emodb")  # 4 speakers x 7 emotions x <= 3 utterances
    extract_features(w, ["egemaps"], num_actors=0, progress=False)
    res = train_run(RunSpec(str(w), "svm", features="egemaps", protocol="kfold", k=2), run_name="emodb-svm", resources=Resources(parallel=False))
    out = export_models(w, "emodb-svm", tmp_path / "export")
    files = sorted(str(p) for p in Path(emovo_dir).rglob("*.wav"))[:12]
    csv = tmp_path / "emovo.csv"
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "serray", "predict", str(out), *files, "--out", str(csv), "--no-progress"],
                         cwd=fresh, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    table = pd.read_csv(csv, keep_default_na=False)
    assert sorted(table["path"]) == files and (table["error"] == "").all()
    probs = table[[f"prob_{c}" for c in res.classes]].astype(float)
    assert ((probs.sum(axis=1) - 1).abs() < 1e-6).all() and set(table["label"]) <= set(res.classes)
    assert not table["transductive"].astype(str).eq("True").any()
    assert list(fresh.iterdir()) == [], "predict wrote into its working directory"
