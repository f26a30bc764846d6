"""`train_run` and `serray train`: predictions store, run record, determinism, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from serray import io
from serray.cli import main
from serray.commands._common import parse_feature_params
from serray.commands._common import parse_assignments, parse_fold_resources, read_config_file, read_run_defaults
from serray.training.resolve import resolve_run_spec
from serray.tune.space import load_search_space
from serray.training.spec import RunSpec
from serray.manifest import write_manifest
from serray.predictions import read_predictions, run_classes
from serray.training.run import config_id, train_run
from serray.training.resources import Resources

from _training_helpers import sequence_features, serve_feature_sets, synth_manifest, vector_features


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A work directory with a synthetic manifest; load_features serves synthetic features."""
    m = synth_manifest(n_speakers=5, per_class=5)
    write_manifest(m, tmp_path, "syn")
    sets = {"vec": vector_features(m), "seq": sequence_features(m)}
    # one utterance without features, as a real extraction failure would leave it
    vec = sets["vec"]
    sets["vec"] = type(vec)("vector", vec.utt_ids[1:], vec.data[1:], missing=[vec.utt_ids[0]])

    import serray.features

    monkeypatch.setattr(serray.features, "load_features", serve_feature_sets(sets))
    return tmp_path, m


def test_train_run_writes_predictions_record_and_folds(workdir):
    w, m = workdir
    res = train_run(RunSpec(w, "svm", features="vec", protocol="loso", normalize="speaker"), resources=Resources(parallel=False), run_name="r1")
    assert res.run == "r1" and len(res.folds) == 5
    preds = read_predictions(w, runs=["r1"])
    test = preds[preds["split"] == "test"]
    # every utterance with features is tested exactly once; the one without is left out
    assert sorted(test["utt_id"]) == sorted(m["utt_id"].iloc[1:])
    assert m["utt_id"].iloc[0] not in set(preds["utt_id"])
    assert run_classes(w, "r1") == ["neutral", "happy", "sad"] == res.classes
    # no test speaker in any training or validation part
    folds = pd.read_parquet(w / "runs" / "r1" / "folds.parquet")
    spk = dict(zip(m["utt_id"], m["speaker"]))
    folds["speaker"] = folds["utt_id"].map(spk)
    for _, f in folds.groupby("fold"):
        test_spk = set(f.loc[f["split"] == "test", "speaker"])
        assert not test_spk & set(f.loc[f["split"] != "test", "speaker"])
    rec = io.read_json(w / "runs" / "r1" / "record.json")
    for key in ("config", "config_id", "seed", "versions", "timings", "metrics", "classes", "features",
                "protocol", "labels", "normalize"):
        assert key in rec, key
    assert rec["config_id"] == res.config_id == config_id("svm", res.config)
    assert {"python", "torch", "scikit-learn", "ray", "serray"} <= set(rec["versions"])
    assert len(rec["metrics"]["folds"]) == 5 and set(rec["timings"]["folds_s"]) == {str(i) for i in range(5)}
    pooled = rec["metrics"]["pooled"]
    assert pooled["ua"] == pytest.approx(res.pooled["ua"]) and pooled["n"] == len(m) - 1
    assert set(pooled["per_group_ua"]["gender"]) == {"f", "m"}
    assert rec["excluded_without_features"] == [m["utt_id"].iloc[0]]
    # pooled UA recomputed from the store
    from serray.metrics import unweighted_average_recall

    assert unweighted_average_recall(test["label"], test["pred"]) == pytest.approx(res.pooled["ua"])


def test_train_run_same_seed_same_numbers(workdir):
    w, _ = workdir
    run = RunSpec(w, "dcnn", features="seq", protocol="kfold", k=3, preset="small", config={"epochs": 2}, seed=5)
    a = train_run(run, resources=Resources(parallel=False, device="cpu"), run_name="a")
    b = train_run(run, resources=Resources(parallel=False, device="cpu"), run_name="b")
    pa = read_predictions(w, runs=["a"]).sort_values(["split", "utt_id"])
    pb = read_predictions(w, runs=["b"]).sort_values(["split", "utt_id"])
    assert np.array_equal(np.stack(pa["logits"]), np.stack(pb["logits"]))
    assert a.config_id == b.config_id and a.pooled == b.pooled


def test_train_run_argument_errors(workdir):
    w, _ = workdir
    with pytest.raises(ValueError, match="takes sequence features"):
        train_run(RunSpec(w, "dcnn", features="vec"), resources=Resources(parallel=False))
    with pytest.raises(ValueError, match="normalize"):
        train_run(RunSpec(w, "svm", features="vec", normalize="minmax"), resources=Resources(parallel=False))
    with pytest.raises(ValueError, match="no hyperparameter"):
        train_run(RunSpec(w, "svm", features="vec", config={"gamma_typo": 1}), resources=Resources(parallel=False))
    with pytest.raises(ValueError, match="unknown model"):
        train_run(RunSpec(w, "nope", features="vec"), resources=Resources(parallel=False))
    with pytest.raises(ValueError, match=r"unknown parameter group\(s\) \['lstm'\]; this model has \['conv1', 'conv2', 'fc', 'out'\]"):
        train_run(RunSpec(w, "dcnn", features="seq", config={"stages": "all;lstm"}), resources=Resources(parallel=True, address="ray://unreachable:1"))
    with pytest.raises(ValueError, match="takes 1 input"):
        train_run(RunSpec(w, "svm", features="vec+vec"), resources=Resources(parallel=False))
    # value types are checked against the defaults before features load or Ray starts
    bad = {"lr": "abc", "epochs": 2.5, "hidden_sizes": 5, "early_stop_typo": None}
    for key, value in bad.items():
        what = "no hyperparameter" if key.endswith("typo") else f"hyperparameter '{key}' must be"
        with pytest.raises(ValueError, match=what):
            train_run(RunSpec(w, "mlp", features="vec", config={key: value}), resources=Resources(address="ray://unreachable:1"))
    with pytest.raises(ValueError, match="hyperparameter 'C' must be a number"):
        train_run(RunSpec(w, "svm", features="vec", config={"C": "abc"}), resources=Resources(address="ray://unreachable:1"))
    # a value only the model's builder knows is wrong is found by building it once, before Ray
    with pytest.raises(ValueError, match="pooling must be 'mean' or 'max'"):
        train_run(RunSpec(w, "dcnn", features="seq", config={"pooling": "median"}), resources=Resources(address="ray://unreachable:1"))


def test_exponent_notation_is_a_number_in_set_variants_and_config_files(tmp_path):
    """PyYAML reads ``5e-4`` as text; --set, --variant and config files mean the number."""
    from serray.training.seeds import parse_variant

    assert parse_assignments(["lr=5e-4", "C=1E3", "w=-2.5e+1", "grid=[1e-3, 0.1]", "name=e5", "tag=1e-3x"]) == {
        "lr": 0.0005, "C": 1000.0, "w": -25.0, "grid": [0.001, 0.1], "name": "e5", "tag": "1e-3x"}
    assert parse_variant("slow:lr=1e-3,epochs=16") == ("slow", {"lr": 0.001, "epochs": 16})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lr: 5e-4\nkernel: rbf\nC: 2\n")
    assert read_config_file(cfg) == {"lr": 0.0005, "kernel": "rbf", "C": 2}
    spec = resolve_run_spec("mlp", {"workdir": tmp_path, "assignments": ["lr=2e-3"]})
    assert spec.config["lr"] == 0.002 and isinstance(spec.config["lr"], float)
    space = tmp_path / "space.yaml"
    space.write_text("model: mlp\nparams:\n  lr: {type: choice, values: [1e-3, 5e-4]}\n")
    assert load_search_space(space).params[0].values == (0.001, 0.0005)
    io.write_yaml({"name": "1e3", "lr": 5e-4}, tmp_path / "round.yaml")  # text that looks like a number stays text
    assert io.read_yaml(tmp_path / "round.yaml") == {"name": "1e3", "lr": 0.0005}


def test_cli_helpers(tmp_path):
    assert parse_assignments(["lr=0.01", "hidden_sizes=[8, 4]", "class_weight=null", "kernel=rbf"]) == {
        "lr": 0.01, "hidden_sizes": [8, 4], "class_weight": None, "kernel": "rbf"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignments(["lr"])
    assert parse_fold_resources("cpu=0.5,gpu=0.25") == {"cpu": 0.5, "gpu": 0.25}
    assert parse_fold_resources(None) == {}
    with pytest.raises(ValueError, match="bad entry 'mem'; expected NAME=AMOUNT"):
        parse_fold_resources("mem")
    flat = tmp_path / "flat.yaml"
    flat.write_text("C: 2.0\nkernel: rbf\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("model: svm\nconfig:\n  C: 3.0\n")
    assert read_config_file(flat) == {"C": 2.0, "kernel": "rbf"}
    assert read_config_file(nested) == {"C": 3.0}
    assert read_run_defaults(flat, "svm") == {}
    assert read_run_defaults(nested, "svm") == {}  # a best.yaml without run keys
    tuned = tmp_path / "best.yaml"
    tuned.write_text("model: svm\nfeatures: compare\nfeature_params: {}\nprotocol: kfold\nk: 3\nconfig:\n  C: 3.0\n")
    assert read_run_defaults(tuned, "svm") == {"features": "compare", "protocol": "kfold", "k": 3}
    with pytest.raises(ValueError, match="is for model 'svm', not 'mlp'"):
        read_run_defaults(tuned, "mlp")


def test_feature_param_parsing():
    from click.testing import CliRunner

    assert parse_feature_params(["model=/m/hubert", "layer=6", "layers=[3, 6]", "pooling=frames"]) == {
        "model": "/m/hubert", "layer": 6, "layers": [3, 6], "pooling": "frames"}
    assert parse_feature_params([]) is None
    # a set prefix must name one of the run's feature sets: a clear error, not a silent key
    out = CliRunner().invoke(main, ["train", "mlp", "--workdir", "W", "--feature-param", "ssl.model=/m"])
    assert out.exit_code == 1 and "'ssl' is not one of this run's feature sets ['egemaps']" in out.output
    out = CliRunner().invoke(main, ["train", "mlp", "--workdir", "W", "--feature-param", "layer"])
    assert out.exit_code == 1 and "expects KEY=VALUE" in out.output


def test_cli_train_prints_table_and_writes_run(workdir):
    w, _ = workdir
    cfg = w / "best.yaml"
    cfg.write_text("config:\n  C: 0.5\n  kernel: rbf\n")
    out = CliRunner().invoke(
        main,
        ["train", "svm", "--workdir", str(w), "--features", "vec", "--config", str(cfg), "--set", "C=2",
         "--normalize", "global", "--seed", "3", "--run", "cli", "--sequential"],
    )
    assert out.exit_code == 0, out.output
    assert "pooled UA" in out.output and "mean   UA" in out.output and "test_ua" in out.output
    rec = json.loads((w / "runs" / "cli" / "record.json").read_text())
    assert rec["config"]["C"] == 2 and rec["config"]["kernel"] == "rbf" and rec["seed"] == 3
    assert rec["torch_threads"] is None  # scikit-learn
    assert "serray" in rec["command_line"]
    bad = CliRunner().invoke(main, ["train", "svm", "--workdir", str(w), "--features", "vec", "--set", "bogus=1", "--sequential"])
    assert bad.exit_code == 1 and "no hyperparameter 'bogus'" in bad.output


def test_cli_train_parallel_shows_epoch_progress(workdir):
    from serray.raycluster import init_ray

    init_ray(num_cpus=2)
    w, _ = workdir
    out = CliRunner().invoke(
        main,
        ["train", "mlp", "--workdir", str(w), "--features", "vec", "--preset", "small", "--set", "epochs=3",
         "--set", "patience=0", "--device", "cpu", "--run", "bar"],
    )
    assert out.exit_code == 0, out.output
    assert "epochs (all folds)" in out.output and "3/3" in out.output and "mean val UA" in out.output
    assert "pooled UA" in out.output
    # one CPU per fold actor by default, so one torch thread each; recorded for reproducibility
    assert json.loads((w / "runs" / "bar" / "record.json").read_text())["torch_threads"] == [1]


def test_cli_type_error_names_the_key_before_ray(workdir):
    from serray.training.seeds import train_seeds
    from serray.tune.options import SearchOptions
    from serray.tune.runner import tune_model

    w, _ = workdir
    r = CliRunner().invoke(main, ["train", "mlp", "--workdir", str(w), "--features", "vec", "--set", "lr=abc",
                                  "--address", "ray://unreachable:1"])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1] == (
        "error: model 'mlp': hyperparameter 'lr' must be a number (default 0.001), got 'abc'")
    run = RunSpec(w, "mlp", features="vec", config={"lr": "abc"})
    with pytest.raises(ValueError, match="'lr' must be a number"):
        train_seeds(run, seeds=[0], resources=Resources(address="ray://unreachable:1"))
    with pytest.raises(ValueError, match="'lr' must be a number"):
        tune_model(run, SearchOptions(num_samples=1, resources=Resources(address="ray://unreachable:1")))


def test_train_extracts_a_feature_set_the_cache_lacks(synth_copy):
    """A fresh work directory: `serray train` extracts the missing set (then trains), once."""
    import shutil

    w = synth_copy
    for d in (w / "features").glob("egemaps-*"):
        shutil.rmtree(d)
    args = ["train", "logreg", "--workdir", str(w), "--features", "egemaps", "--protocol", "kfold", "--k", "3", "--sequential"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "pooled UA" in r.output and list((w / "features").glob("egemaps-*/meta.json"))
    r2 = CliRunner().invoke(main, [*args, "--run", "again"])
    assert r2.exit_code == 0, r2.output
    import re

    name = re.search(r"run (\S+)  model logreg", r.output).group(1)
    first = read_predictions(w, [name])
    again = read_predictions(w, ["again"])
    assert np.array_equal(np.stack(first["logits"]), np.stack(again["logits"]))


def test_unexpected_errors_print_one_line_and_the_traceback_only_with_debug(workdir, monkeypatch):
    import serray.training.run

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(serray.training.run, "train_run", boom)
    w, _ = workdir
    args = ["train", "svm", "--workdir", str(w), "--features", "vec"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: RuntimeError: disk on fire (run `serray -vv")
    r = CliRunner().invoke(main, ["-vv", *args])
    assert isinstance(r.exception, RuntimeError)


def test_sklearn_runs_in_process_by_default_with_rays_numbers(workdir, monkeypatch):
    import os

    import ray

    import serray.raycluster

    w, _ = workdir

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an in-process run")

    with monkeypatch.context() as m:
        m.setattr(serray.raycluster, "init_ray", no_ray)
        auto = train_run(RunSpec(w, "svm", features="vec"), run_name="auto")
    assert auto.record["parallel"] is False
    on_ray = train_run(RunSpec(w, "svm", features="vec"), run_name="on-ray", resources=Resources(parallel=True))
    assert on_ray.record["parallel"] is True
    a, b = read_predictions(w, ["auto"]), read_predictions(w, ["on-ray"])
    assert a["utt_id"].tolist() == b["utt_id"].tolist()
    assert np.array_equal(np.stack(a["logits"]), np.stack(b["logits"]))
    # serray's local Ray workers run at the driver's priority, not Ray's nice 15
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)


def test_small_torch_job_trains_in_process_with_rays_numbers(workdir, monkeypatch):
    """A torch job estimated under IN_PROCESS_WORK_S trains here, with the threads of a fold
    actor, and gives Ray's logits bit for bit; a large estimate goes to Ray."""
    import serray.raycluster
    import serray.training.executor as executor

    w, _ = workdir
    spec = RunSpec(w, "mlp", features="vec", config={"epochs": 4, "patience": 2})

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an in-process run")

    with monkeypatch.context() as m:
        m.setattr(serray.raycluster, "init_ray", no_ray)
        auto = train_run(spec, run_name="auto")
    assert auto.record["parallel"] is False and "estimated" in auto.record["execution"]
    on_ray = train_run(spec, run_name="on-ray", resources=Resources(parallel=True))
    a, b = read_predictions(w, ["auto"]), read_predictions(w, ["on-ray"])
    assert a["utt_id"].tolist() == b["utt_id"].tolist()
    assert np.array_equal(np.stack(a["logits"]), np.stack(b["logits"]))
    monkeypatch.setattr(executor, "IN_PROCESS_WORK_S", 0.0)
    big = train_run(spec, run_name="big")
    assert big.record["parallel"] is True and big.record["execution"].startswith("on Ray")


def test_pipeline_prepares_and_trains_in_one_command(synth_copy):
    """(Extraction of a missing set on the way is tested with `serray train` above.)"""
    w = synth_copy
    r = CliRunner().invoke(main, ["pipeline", "logreg", "--prepare", "nonsense", "--workdir", str(w)])
    assert r.exit_code == 1 and "must be CORPUS=ROOT" in r.output
    corpus = sorted(p.stem for p in (w / "manifests").glob("*.parquet"))[0]
    r = CliRunner().invoke(main, ["pipeline", "logreg", "--prepare", f"{corpus}=/nowhere", "--workdir", str(w),
                                  "--features", "egemaps", "--protocol", "kfold", "--k", "3"])
    assert r.exit_code == 0, r.output  # the manifest exists: not scanned again (the root is not read)
    assert "pooled UA" in r.output


def test_speaker_normalisation_is_named_transductive_and_warns_about_thin_speakers(workdir, caplog):
    import logging

    w, m = workdir
    with caplog.at_level(logging.INFO, logger="serray"):
        res = train_run(RunSpec(w, "svm", features="vec", normalize="speaker"), run_name="spk")
    assert res.record["transductive"] is True and "unlabelled test-speaker features" in res.record["transductive_reason"]
    assert "transductive" in caplog.text
    # the synthetic speakers have 15 utterances each (< 20): every one is named
    assert "5 of 5 speakers have fewer than 20 utterances or a single emotion" in caplog.text
    from serray.training.experiment import _warn_speaker_normalisation

    big = pd.concat([m] * 2, ignore_index=True)  # 30 utterances per speaker: no warning ...
    assert _warn_speaker_normalisation(big) == []
    one = big[(big["speaker"] != big["speaker"].iloc[0]) | (big["emotion"] == big["emotion"].iloc[0])]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="serray"):  # ... but a speaker with a single emotion is named
        assert _warn_speaker_normalisation(one) == [str(m["speaker"].iloc[0])]
    assert "1 of 5 speakers" in caplog.text and "--normalize global" in caplog.text
    g = train_run(RunSpec(w, "svm", features="vec", normalize="global"), run_name="glob")
    assert "transductive" not in g.record


def test_train_run_protocol_split_trains_on_the_manifests_partitions(workdir):
    w, m = workdir
    part = dict(zip(sorted(m["speaker"].unique()), ["train", "Train", "Development", "Test1", "Test2"]))
    write_manifest(m.assign(split=m["speaker"].map(part)), w, "syn")
    res = train_run(RunSpec(w, "svm", features="vec", protocol="split"), resources=Resources(parallel=False), run_name="official")
    assert len(res.folds) == 2
    folds = pd.read_parquet(w / "runs" / "official" / "folds.parquet")
    folds["part"] = folds["utt_id"].map(dict(zip(m["utt_id"], m["speaker"].map(part).str.lower())))
    assert sorted(folds["fold_name"].unique()) == ["test=test1", "test=test2"]
    for name, f in folds.groupby("fold_name"):
        assert set(f.groupby("split")["part"].unique().map(tuple)) == {("train",), ("development",), (name[5:],)}
    test = read_predictions(w, runs=["official"]).query("split == 'test'")
    assert set(test["utt_id"]) == set(m.loc[m["speaker"].map(part).str.startswith("Test"), "utt_id"]) - {m["utt_id"].iloc[0]}
