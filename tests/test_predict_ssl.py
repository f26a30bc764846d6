"""serray predict with models trained on self-supervised embeddings (``ssl``, a local tiny
HuBERT folder): the recorded model folder and layer are re-extracted and reproduce each
fold's stored test logits; a moved model folder is one line naming it and the fix
(``--ssl-model``), which then predicts the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import serray
from serray.manifest import load_manifests
from serray.training.resources import Resources
from serray.training.spec import RunSpec
from serray.workdir import Workdir

pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread while these tests run: on a busy 2-core machine torch's thread pool
    makes the tiny model's forward passes 20x slower (as one extraction worker has)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ssl_run(synth_workdir, tmp_path_factory):
    """``(workdir, run result, model folder)``: logreg on layer 1 of a tiny HuBERT's
    mean-pooled states (all 3 stored), 2-fold on synth_a, fold models kept."""
    import shutil

    from _ssl_models import save_tiny_hubert

    from serray.features import extract_features
    from serray.training.run import train_run

    root = tmp_path_factory.mktemp("pred_ssl")
    model = save_tiny_hubert(root / "hubert")
    w = root / "w"
    shutil.copytree(synth_workdir, w, symlinks=True)
    manifest = load_manifests(w, ["synth_a"])
    extract_features(w, ["ssl"], manifest, params={"ssl": {"model": str(model)}}, num_actors=0, progress=False)
    spec = RunSpec(str(w), "logreg", features="ssl", feature_params={"model": str(model), "layer": 1}, protocol="kfold",
                   k=2, corpora=["synth_a"])
    res = train_run(spec, run_name="lr-ssl", resources=Resources(parallel=False))
    return w, res, model


def _centered(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=1, keepdims=True)


def _fold_audio(w, res, index: int) -> tuple[object, list[str]]:
    fold = next(f for f in res.folds if f.index == index)
    paths = load_manifests(w).set_index("utt_id")["path"]
    return fold, paths.loc[list(fold.test_ids)].tolist()


def test_ssl_models_reproduce_each_folds_stored_test_logits(ssl_run):
    w, res, model = ssl_run
    for f in res.folds:
        fold, audio = _fold_audio(w, res, f.index)
        folder = next(Workdir(w).models("lr-ssl").glob(f"*/fold{fold.index}"))
        assert serray.load(folder).members[0].inputs["x"]["params"] == {"model": str(model), "layer": 1}
        table = serray.load(folder).predict(audio)
        assert (table["error"] == "").all() and len(table) == len(audio)
        logp = np.log(table[[f"prob_{c}" for c in res.classes]].to_numpy())  # the logits up to a constant per row
        assert np.abs(_centered(logp) - _centered(fold.test_logits.astype(np.float64))).max() <= 1e-5
        assert list(table["label"]) == [res.classes[i] for i in fold.test_logits.argmax(axis=1)]


def test_a_moved_ssl_model_folder_is_named_with_the_fix(ssl_run, tmp_path):
    from click.testing import CliRunner

    from serray.cli import main

    w, res, model = ssl_run
    fold, audio = _fold_audio(w, res, res.folds[0].index)
    folder = next(Workdir(w).models("lr-ssl").glob(f"*/fold{fold.index}"))
    moved = tmp_path / "hubert-moved"
    model.rename(moved)
    try:
        with pytest.raises(ValueError, match=f"ssl model folder {model} .*does not exist.*--ssl-model {model}=FOLDER"):
            serray.load(folder).predict(audio)
        csv = tmp_path / "p.csv"
        r = CliRunner().invoke(main, ["predict", str(folder), *audio, "--out", str(csv), "--no-progress"])
        assert r.exit_code != 0 and "Traceback" not in r.output and str(model) in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        r = CliRunner().invoke(main, ["predict", str(folder), *audio, "--out", str(csv), "--no-progress",
                                      "--ssl-model", f"{model}={moved}"])
        assert r.exit_code == 0, r.output
        table = pd.read_csv(csv, keep_default_na=False)
        logp = np.log(table[[f"prob_{c}" for c in res.classes]].astype(float).to_numpy())
        assert np.abs(_centered(logp) - _centered(fold.test_logits.astype(np.float64))).max() <= 1e-5
        with pytest.raises(ValueError, match="no member records that ssl model"):
            serray.load(folder).predict(audio, ssl_models={"/elsewhere/hubert": str(moved)})
    finally:
        moved.rename(model)
