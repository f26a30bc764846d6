"""Integrity of options and stored files (issue 40, items 3, 4 and 6).

Bad options fail with one line before anything starts; damaged stored files (features,
predictions, JSON records, best.yaml) fail naming the file and the fix, and the feature
cache and the seeds store repair themselves. Audio checks: test_audio_checks.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from serray import io, manifest, predictions
from serray.cli import main


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result, *needles: str) -> str:
    """The CLI's output: exit code 1, no traceback, one ``error:`` line holding every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------ item 6: options checked first


@pytest.mark.parametrize("k", ["0", "1", "-3"])
def test_kfold_k_below_two_is_refused(tmp_path, k):
    # before: --k 0 silently ran 5 folds (`or` took 0 for "not given")
    _one_error_line(_cli("train", "svm", "-w", tmp_path, "--protocol", "kfold", "--k", k), "--k", ">= 2", f"got {k}")


def test_k_zero_is_not_replaced_by_best_yaml_or_default(tmp_path):
    from serray.commands._common import run_spec_from_options

    cfg = tmp_path / "best.yaml"
    io.write_yaml({"model": "svm", "k": 4, "config": {}}, cfg)
    assert run_spec_from_options("svm", {"workdir": str(tmp_path), "config_file": str(cfg)}, announce=False).k == 4
    with pytest.raises(ValueError, match="--k must be an integer >= 2"):
        run_spec_from_options("svm", {"workdir": str(tmp_path), "config_file": str(cfg), "k": 0}, announce=False)


@pytest.mark.parametrize("n", ["0", "-1"])
def test_tune_num_samples_below_one_is_refused(tmp_path, n):
    _one_error_line(_cli("tune", "mlp", "-w", tmp_path, "--num-samples", n), "--num-samples", ">= 1")


def test_seeds_n_below_one_is_refused(tmp_path):
    _one_error_line(_cli("seeds", "mlp", "-w", tmp_path, "--n", "0"), "--n", ">= 1")


@pytest.mark.parametrize("args, option", [
    (["train", "svm", "-w", "{w}", "--run", "a/b"], "--run"),
    (["tune", "mlp", "-w", "{w}", "--name", "a/b"], "--name"),
    (["tune", "mlp", "-w", "{w}", "--name", ".."], "--name"),
    (["seeds", "mlp", "-w", "{w}", "--run-prefix", "../x"], "--run-prefix"),
    (["seeds", "mlp", "-w", "{w}", "--variant", "a/b"], "--variant"),
    (["seeds", "mlp", "-w", "{w}", "--variant", "a\\b:lr=0.1"], "--variant"),
    (["ensemble", "{w}", "--runs", "r1", "--name", "../../x"], "--name"),
    (["fuse", "{w}", "--runs", "r1", "--name", "../x"], "--name"),
])
def test_names_must_be_single_path_components(tmp_path, args, option):
    args = [a.format(w=tmp_path) for a in args]
    _one_error_line(_cli(*args), option, "not a valid name")
    assert not (tmp_path.parent / "x").exists()


def test_search_options_refuse_what_no_search_can_run():
    from serray.tune.options import SearchOptions

    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match="--num-samples must be an integer >= 1"):
            SearchOptions(num_samples=n)
    with pytest.raises(ValueError, match="not a valid name"):
        SearchOptions(name="a/b")
    assert SearchOptions(num_samples=1, name="exp-1").num_samples == 1


def test_name_rule():
    for bad in ("", ".", "..", "a/b", "a\\b", "../x", "-x", ".hidden"):
        with pytest.raises(ValueError, match="not a valid name"):
            predictions.check_name("--name", bad)
    assert predictions.check_name("--name", "tune-mlp-egemaps+mfb-loso-native") == "tune-mlp-egemaps+mfb-loso-native"


def test_ensemble_empty_runs_is_a_clear_error(tmp_path):
    # before: IndexError on run_list[0]
    _one_error_line(_cli("ensemble", tmp_path, "--runs", ""), "--runs", "names no run")
    _one_error_line(_cli("ensemble", tmp_path, "--runs", " , "), "--runs", "names no run")


def _store(w: Path) -> None:
    classes = ["angry", "neutral", "sad"]
    utts = [f"c/{i}" for i in range(24)]
    man = pd.DataFrame({"utt_id": utts, "path": [f"/x/{i}.wav" for i in range(24)], "corpus": "c",
                        "speaker": [f"c_{i % 4}" for i in range(24)], "emotion": [classes[i % 3] for i in range(24)],
                        "gender": ["f" if i % 4 < 2 else "m" for i in range(24)]})
    manifest.write_manifest(man, w, "c")
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        rows = [{"fold": i % 4, "split": split, "utt_id": u, "label": classes[i % 3], "pred": classes[(i + seed) % 3],
                 "logits": rng.normal(size=3).tolist()} for split in ("validation", "test") for i, u in enumerate(utts)]
        predictions.write_predictions(w, pd.DataFrame(rows), run="r1", config_id="c0", seed=seed, classes=classes)


def test_report_repeated_run_is_used_once_with_a_note(tmp_path):
    # before: --runs r1,r1 ended in a TypeError
    _store(tmp_path)
    r = _cli("report", tmp_path, "--runs", "r1,r1", "--bootstrap", "10")
    assert r.exit_code == 0, r.output
    assert "note: --runs names r1 more than once; each is used once" in r.output


def test_seeds_suggests_an_ensemble_size_the_runs_hold(tmp_path, monkeypatch):
    """`seeds --n 4` printed `ensemble --k 1-5`, which the ensemble command then refused."""
    from serray.training import seeds as seeds_mod

    def fake_train_seeds(run, *, seeds, variants, run_prefix, **kwargs):
        rows = [{"variant": "base", "run": "p-base", "seed": s, "split": sp, "ua": 0.5, "wa": 0.5, "ua_fold": 0.5,
                 "wa_fold": 0.5} for s in seeds for sp in ("validation", "test")]
        return seeds_mod.SeedsResult({"base": "p-base"}, {"base": "c0"}, pd.DataFrame(rows), [], 1.0)

    monkeypatch.setattr(seeds_mod, "train_seeds", fake_train_seeds)
    r = _cli("seeds", "svm", "-w", tmp_path, "--n", "4", "--run-prefix", "p")
    assert r.exit_code == 0, r.output
    hint = [ln for ln in r.output.splitlines() if ln.startswith("next: serray ensemble")]
    assert hint and hint[0].endswith("--k 1-4"), r.output
    r = _cli("seeds", "svm", "-w", tmp_path, "--n", "7", "--run-prefix", "p")
    assert r.output.rstrip().endswith("--k 1-5"), r.output


@pytest.mark.parametrize("command", [["train", "svm", "--ray"], ["tune", "mlp"], ["seeds", "mlp"]])
@pytest.mark.parametrize("request_, unit", [("gpu=1", "GPU"), ("cpu=100000", "CPU")])
def test_infeasible_fold_resources_fail_before_ray_starts(tmp_path, monkeypatch, command, request_, unit):
    """Ray would wait forever ("cannot fulfil") for a fold no node can hold."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this machine has no GPU, whatever it holds
    import ray

    was_running = ray.is_initialized()
    r = _cli(*command[:2], "-w", tmp_path, *command[2:], "--fold-resources", request_)
    _one_error_line(r, "--fold-resources", request_, f"{unit}(s)", "could never start")
    assert ray.is_initialized() == was_running


def test_check_request_accepts_what_this_machine_has(monkeypatch):
    import ray

    from serray.raycluster import check_request, local_resources

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a Ray started by an earlier test is not this check's
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert local_resources()["GPU"] == 2.0
    check_request({"cpu": 1, "gpu": 2})  # no error
    check_request({"cpu": 10 ** 6}, address="auto")  # a cluster to join: checked once joined
    with pytest.raises(ValueError, match="gpu=3: this machine"):
        check_request({"gpu": 3})


def test_check_request_on_a_cluster_needs_one_node_that_holds_the_fold(monkeypatch):
    """Joined clusters: a fold must fit one alive node (the sum over nodes does not help)."""
    import ray

    from serray.raycluster import check_request

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ])
    check_request({"cpu": 8, "gpu": 1}, address="auto")
    with pytest.raises(ValueError, match="cpu=12: the largest node of the Ray cluster has 8 CPU"):
        check_request({"cpu": 12}, address="auto")
    with pytest.raises(ValueError, match="gpu=2: the largest node of the Ray cluster has 1 GPU"):
        check_request({"gpu": 2}, address="auto")


# ------------------------------------------------------------------ item 3: damaged stored files


def _small_manifest(w: Path, n: int = 4) -> pd.DataFrame:
    return manifest.load_manifests(w).head(n)


def test_truncated_npy_is_named_on_load_and_re_extracted(synth_copy, caplog):
    from serray.features import extract_features, load_features
    from serray.features.base import file_identity
    from serray.features.cache import FeatureCache, npy_problem
    from serray.features.base import get_extractor

    w = synth_copy
    m = _small_manifest(w)
    extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)
    cache = FeatureCache(w, get_extractor("mfb"))
    victim = cache.array_path(file_identity(m["path"].iloc[1]))
    assert npy_problem(victim) is None
    victim.write_bytes(victim.read_bytes()[:300])
    assert "truncated" in npy_problem(victim)
    with pytest.raises(io.CorruptFileError) as err:
        load_features(w, "mfb", m)
    assert str(victim) in str(err.value) and "serray features" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="serray.features"):
        rep = extract_features(w, ["mfb"], manifest=m, num_actors=0, progress=False)["mfb"]
    assert (rep.n_cached, rep.n_extracted, rep.n_failed) == (3, 1, 0)  # before: 4 cached, 0 extracted
    assert any(str(victim) in r.getMessage() for r in caplog.records)
    fs = load_features(w, "mfb", m)
    assert len(fs) == 4 and npy_problem(victim) is None


def test_truncated_vector_parquet_is_named_on_load_and_re_extracted(synth_copy, caplog):
    from serray.features import extract_features, load_features

    w = synth_copy
    m = _small_manifest(w)
    (part,) = list((w / "features").glob("egemaps-*/vectors/*.parquet"))
    part.write_bytes(part.read_bytes()[:2000])
    with pytest.raises(io.CorruptFileError) as err:  # before: "Parquet magic bytes not found", no path
        load_features(w, "egemaps", m)
    assert str(part) in str(err.value) and "serray features" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="serray.features"):
        rep = extract_features(w, ["egemaps"], manifest=m, num_actors=0, progress=False)["egemaps"]
    assert rep.n_extracted == 4 and any(str(part) in r.getMessage() for r in caplog.records)
    assert len(load_features(w, "egemaps", m)) == 4


def test_truncated_feature_meta_is_named_and_repaired(synth_copy):
    from serray.features import extract_features, load_features

    w = synth_copy
    m = _small_manifest(w)
    (meta,) = list((w / "features").glob("egemaps-*/meta.json"))
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(io.CorruptFileError) as err:  # before: a JSON parser message without the path
        load_features(w, "egemaps", m)
    assert str(meta) in str(err.value)
    rep = extract_features(w, ["egemaps"], manifest=m, num_actors=0, progress=False)["egemaps"]
    assert rep.n_failed == 0 and rep.n_extracted == 1  # one entry rewrites meta.json
    assert load_features(w, "egemaps", m).meta["dims"] == [88]


def test_truncated_predictions_part_is_named_and_trained_again(tmp_path, caplog):
    from serray.training.seeds import stored_parts

    _store(tmp_path)
    part = tmp_path / "predictions" / "r1" / "c0__seed0.parquet"
    part.write_bytes(part.read_bytes()[:500])
    for read in (lambda: predictions.read_predictions(tmp_path, ["r1"]), lambda: predictions.run_classes(tmp_path, "r1")):
        with pytest.raises(io.CorruptFileError) as err:  # before: "Parquet magic bytes not found", no path
            read()
        assert str(part) in str(err.value) and "serray seeds" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="serray.training"):
        todo, done = stored_parts(tmp_path, {"base": "r1"}, {"base": "c0"}, [0, 1, 2])
    assert todo == [("base", 0), ("base", 2)] and done == [("base", 1)]  # before: seed 0 counted as done
    assert any(str(part) in r.getMessage() for r in caplog.records)
    r = _cli("ensemble", tmp_path, "--runs", "r1")
    _one_error_line(r, str(part))


def test_truncated_manifest_names_the_file(tmp_path):
    _store(tmp_path)
    path = tmp_path / "manifests" / "c.parquet"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(io.CorruptFileError) as err:  # before: "Parquet magic bytes not found", no path
        manifest.load_manifests(tmp_path)
    assert str(path) in str(err.value) and "serray data prepare" in str(err.value)


@pytest.mark.parametrize("text", ['{"run": "r1", "metrics": {"test_ua', '{"a": 1}\x00garbage'])
def test_truncated_json_names_the_file(tmp_path, text):
    path = tmp_path / "runs" / "r1" / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(io.CorruptFileError) as err:
        io.read_json(path)
    assert str(path) in str(err.value) and "re-run the command that writes it" in str(err.value)


def test_report_names_a_truncated_record(tmp_path):
    _store(tmp_path)
    record = tmp_path / "runs" / "r1" / "record.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"run": "r1", "model": "sv')
    _one_error_line(_cli("report", tmp_path, "--runs", "r1", "--bootstrap", "10"), str(record))


# ------------------------------------------------------------------ item 4: partial best.yaml


def _best_yaml(path: Path) -> Path:
    io.write_yaml({"model": "svm", "features": "egemaps", "protocol": "kfold", "k": 3, "normalize": "speaker",
                   "config": {"C": 0.0012520987654321, "kernel": "rbf"}}, path)
    return path


def test_serray_yaml_ends_with_a_marker_and_reads_back(tmp_path):
    best = _best_yaml(tmp_path / "best.yaml")
    lines = best.read_text().splitlines()
    assert lines[0] == io.YAML_HEADER and lines[-1] == io.YAML_END
    assert io.read_yaml(best)["config"]["C"] == 0.0012520987654321


@pytest.mark.parametrize("cut", [-30, -12, 60, 130, 10])
def test_truncated_best_yaml_is_refused_naming_the_file(tmp_path, cut):
    """`head -c N best.yaml` trained with the cut number and defaults for the rest."""
    best = _best_yaml(tmp_path / "best.yaml")
    text = best.read_text()
    cut_file = tmp_path / "cut.yaml"
    cut_file.write_text(text[:cut])
    line = _one_error_line(_cli("train", "svm", "-w", tmp_path, "--config", cut_file), str(cut_file), "cut short")
    assert "end marker" in line


def test_hand_written_yaml_without_marker_is_accepted(tmp_path):
    from serray.commands._common import read_config_file, read_run_defaults

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("# my settings\nC: 0.5\n")
    assert read_config_file(cfg) == {"C": 0.5}
    cfg.write_text("model: svm\nk: 3\nconfig:\n  C: 0.5\n")
    assert read_run_defaults(cfg, "svm") == {"k": 3} and read_config_file(cfg) == {"C": 0.5}


def test_unparsable_yaml_names_the_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("C: [0.5\nkernel: rbf\n")
    with pytest.raises(io.CorruptFileError) as err:
        io.read_yaml(cfg)
    assert str(cfg) in str(err.value) and "line" in str(err.value)
