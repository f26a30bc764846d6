"""SSL features through the real ``from_pretrained`` path with a tiny random-init HuBERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from serray.features import extract_features, get_extractor, load_features

SR = 16000


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    folder = tmp_path_factory.mktemp("tiny_hubert")
    transformers.HubertModel(cfg).save_pretrained(folder)
    return folder


def _audio(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * SR)).astype(np.float32)


def test_one_vector_per_layer(tiny_hubert: Path) -> None:
    ext = get_extractor("ssl", model=str(tiny_hubert))
    assert ext.kind == "vector"
    out = ext.extract(_audio(1.0, 0))
    assert out.shape == (3, 32)  # CNN projection + 2 transformer layers, hidden size 32
    assert ext.describe()["layers"] == [0, 1, 2]
    # a batch gives each utterance the numbers it gets alone (group-norm model: no padding)
    xs = [_audio(1.0, 1), _audio(0.5, 2), _audio(1.0, 3)]
    batch = ext.extract_batch(xs)
    for x, b in zip(xs, batch):
        np.testing.assert_allclose(b, ext.extract(x), atol=1e-5)
    frames = get_extractor("ssl", model=str(tiny_hubert), pooling="frames", layers="0,2")
    seq = frames.extract(_audio(1.0, 0))
    assert frames.kind == "sequence" and seq.shape[0] == 2 and seq.shape[2] == 32 and seq.dtype == np.float16
    np.testing.assert_allclose(seq.astype(np.float32).mean(axis=1), out[[0, 2]], atol=2e-2)
    with pytest.raises(ValueError, match="out of range"):
        get_extractor("ssl", model=str(tiny_hubert), layers=[5]).extract(_audio(1.0, 0))


def test_model_change_changes_the_key(tiny_hubert: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_hubert, copy)
    a = get_extractor("ssl", model=str(copy)).key()
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert get_extractor("ssl", model=str(copy)).key() != a


def test_extract_and_load_layers(tiny_hubert: Path, tmp_path: Path) -> None:
    rows = []
    for i, dur in enumerate((0.8, 1.2, 1.0)):
        p = tmp_path / f"u{i}.wav"
        sf.write(p, _audio(dur, 10 + i), SR)
        rows.append({"utt_id": f"u{i}", "path": str(p)})
    m = pd.DataFrame(rows)
    W = tmp_path / "W"
    params = {"model": str(tiny_hubert), "layers": "all"}
    rep = extract_features(W, ["ssl"], m, params={"ssl": params}, num_actors=0, progress=False)["ssl"]
    assert rep.n_extracted == 3 and rep.n_failed == 0
    last = load_features(W, "ssl", m, params=params)
    assert last.kind == "vector" and last.data.shape == (3, 32) and last.shape == (32,)
    first = load_features(W, "ssl", m, params={**params, "layer": 0})
    assert not np.allclose(first.data, last.data)
    allcat = load_features(W, "ssl", m, params=params, layer="all")
    assert allcat.data.shape == (3, 96)
    assert (allcat.layers, last.layers, first.layers) == (3, 1, 1)  # what a layer-mixing model checks
    np.testing.assert_allclose(allcat.data[:, 64:], last.data)
    np.testing.assert_allclose(allcat.data[:, :32], first.data)


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_trains_on_ssl_layers_chosen_with_feature_params(tiny_hubert: Path, emodb_dir: Path, tmp_path: Path) -> None:
    """`--feature-param` selects the SSL model and layer for train; best.yaml carries them to train and seeds."""
    import json

    import yaml
    from click.testing import CliRunner

    from serray.cli import main
    from serray.corpora import prepare_corpus

    prepare_corpus("emodb", emodb_dir, tmp_path, check_audio=False)
    extract_features(tmp_path, ["ssl"], params={"ssl": {"model": str(tiny_hubert)}}, num_actors=0, progress=False)
    w = str(tmp_path)
    base = ["train", "logreg", "--workdir", w, "--features", "ssl", "--sequential", "--feature-param", f"model={tiny_hubert}"]

    records = {}
    for layer in (1, 2):
        out = CliRunner().invoke(main, [*base, "--feature-param", f"layer={layer}"])
        assert out.exit_code == 0, out.output
        run = next(line.split()[1] for line in out.output.splitlines() if line.startswith("run "))
        records[layer] = json.loads((tmp_path / "runs" / run / "record.json").read_text())
    assert records[1]["run"] != records[2]["run"]  # other layer, other run: predictions never mix
    # another spelling of the same model folder is the same features, hence the same run name
    same = CliRunner().invoke(main, [*base[:-1], f"model={tiny_hubert}/", "--feature-param", "layer=2"])
    assert same.exit_code == 0 and f"run {records[2]['run']} " in same.output, same.output
    assert records[2]["feature_params"] == {"model": str(tiny_hubert), "layer": 2}
    # other layer, other features, other logits (the random tiny model's layers 1 and 2 are
    # so alike that the pooled UA can be equal on some CPUs; the logits are not)
    from serray.predictions import read_predictions

    logits = {layer: np.stack(read_predictions(tmp_path, [rec["run"]])["logits"]) for layer, rec in records.items()}
    assert not np.allclose(logits[1], logits[2])
    assert records[2]["metrics"]["pooled"]["ua"] > 1 / 7  # 7 classes

    missing = CliRunner().invoke(main, ["train", "logreg", "--workdir", w, "--features", "ssl", "--sequential"])
    assert missing.exit_code != 0 and "--feature-param model=" in missing.output
    # ... and names the cached extraction to copy
    assert f"Cached 'ssl' extractions in {w}, for train/tune/seeds: --feature-param model={tiny_hubert.resolve()}" in missing.output

    # a tune best.yaml gives features and feature params as defaults (the same run as layer 2 above)
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({
        "model": "logreg", "features": "ssl", "feature_params": records[2]["feature_params"], "protocol": "loso",
        "labels": "native", "normalize": "global", "k": 5, "fold_seed": 0, "config": records[2]["config"],
    }))
    again = CliRunner().invoke(main, ["train", "logreg", "--workdir", w, "--config", str(best), "--sequential"])
    assert again.exit_code == 0, again.output
    assert f"run {records[2]['run']} " in again.output and "defaults from" in again.output
    wrong = CliRunner().invoke(main, ["train", "svm", "--workdir", w, "--config", str(best), "--sequential"])
    assert wrong.exit_code != 0 and "is for model 'logreg'" in wrong.output
