"""serray predict on the feature actor pool: where extraction runs (this process for small
inputs, the pool of `serray features` above), the same predictions on a real local Ray
as in this process, and batched scoring that keeps each speaker whole."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import serray
from serray.artifacts import predictor
from serray.manifest import load_manifests
from serray.training.resources import Resources
from serray.training.spec import RunSpec
from serray.workdir import Workdir


@pytest.fixture(scope="module")
def kept(synth_workdir, tmp_path_factory):
    """``(workdir, run name -> its kept-models folder)``: an svm on eGeMAPS, 2-fold, with
    global and with per-speaker normalisation."""
    import shutil

    from serray.training.run import train_run

    w = tmp_path_factory.mktemp("pred_ray") / "w"
    shutil.copytree(synth_workdir, w, symlinks=True)
    folders = {}
    for norm in ("global", "speaker"):
        spec = RunSpec(str(w), "svm", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"], normalize=norm)
        train_run(spec, run_name=f"svm-{norm}", resources=Resources(parallel=False))
        folders[norm] = Workdir(w).models(f"svm-{norm}")
    return w, folders


@pytest.fixture
def local_ray():
    """Shuts down the local Ray a test started (``serray.raycluster`` starts it)."""
    yield
    import ray

    ray.shutdown()


def _probs(table: pd.DataFrame) -> np.ndarray:
    return table[[c for c in table.columns if c.startswith("prob_")]].astype(float).to_numpy()


def test_where_extraction_runs():
    small = predictor.extraction_pools(predictor.IN_PROCESS_MAX_FILES)
    assert small.num_actors == 0  # this process: no pool to start
    big = predictor.extraction_pools(predictor.IN_PROCESS_MAX_FILES + 1)
    assert (big.num_actors, big.use_ray, big.address) == (None, None, None)  # what `serray features` picks
    assert predictor.extraction_pools(3, use_ray=True).use_ray is True
    assert predictor.extraction_pools(3, address="auto").address == "auto"
    assert predictor.extraction_pools(3, use_ray=False).num_actors == 0
    assert predictor.extraction_pools(500, num_actors=2).num_actors == 2
    with pytest.raises(ValueError, match=r"--no-ray\) cannot join a cluster"):
        predictor.extraction_pools(3, use_ray=False, address="auto")
    with pytest.raises(ValueError, match="num_actors=0"):
        predictor.extraction_pools(3, num_actors=0, use_ray=True)
    with pytest.raises(ValueError, match="must be >= 0"):
        predictor.extraction_pools(3, num_actors=-1)


def test_ray_pool_predicts_what_this_process_predicts(kept, tmp_path, local_ray, caplog):
    """`serray predict --ray` extracts on Ray actors of a real local Ray; the table equals
    the in-process one (order, labels, probabilities), broken files listed on both."""
    from click.testing import CliRunner

    from serray.cli import main

    w, folders = kept
    paths = sorted(load_manifests(w, ["synth_a"])["path"])[:10]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    files = [*paths, str(broken)]
    here = serray.load(folders["global"]).predict(files, num_actors=0)
    csv = tmp_path / "ray.csv"
    with caplog.at_level(logging.INFO, logger="serray.artifacts.predictor"):
        r = CliRunner().invoke(main, ["predict", str(folders["global"]), *files, "--out", str(csv), "--no-progress",
                                      "--ray", "--num-actors", "2"])
    assert r.exit_code == 0, r.output
    assert "on 2 Ray actor(s)" in caplog.text
    on_ray = pd.read_csv(csv, keep_default_na=False)
    assert list(on_ray["path"]) == list(here["path"]) and list(on_ray["label"]) == list(here["label"].fillna(""))
    scored = (here["error"] == "").to_numpy()
    assert scored.sum() == 10 and np.abs(_probs(on_ray[scored]) - _probs(here[scored])).max() <= 1e-6
    assert "unreadable" in on_ray["error"].iloc[-1] and on_ray["error"].iloc[-1] == here["error"].iloc[-1]


@pytest.mark.parametrize("norm", ["global", "speaker"])
def test_batched_scoring_equals_scoring_at_once(kept, monkeypatch, norm):
    """Batches of 2 utterances give the probabilities of one batch; with per-speaker
    normalisation each batch holds whole speakers (their statistics over all their files)."""
    w, folders = kept
    m = load_manifests(w, ["synth_a"])
    m = m[m["speaker"].isin(sorted(m["speaker"].unique())[:2])].groupby("speaker").head(4)
    manifest = m.sample(frac=1.0, random_state=0)[["utt_id", "path", "speaker"]].reset_index(drop=True)  # interleaved
    pred = serray.load(folders[norm])
    whole = pred.predict(manifest)
    monkeypatch.setattr(predictor, "SCORE_BATCH", 2)
    batched = pred.predict(manifest)
    assert list(batched["utt_id"]) == list(manifest["utt_id"])
    assert np.abs(_probs(batched) - _probs(whole)).max() <= 1e-9
    assert bool(batched["transductive"].all()) == (norm == "speaker")
