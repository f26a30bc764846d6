"""Waveform augmentation (issue 41): augmented copies in the feature cache, keyed by the
augmentation and its seed, and in training only in the training part of their source
utterance's fold (``wave_augment``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from serray.features import extract_features, list_cached, load_features
from serray.features.augment import apply_draw, parse_augment
from serray.features.copies import load_copies
from serray.training.resources import Resources
from serray.protocols import LeakageError, check_copies
from serray.training.wave import augmented_fold, space_tags, wave_tags
from serray.workdir import Workdir

SR = 16000
EMODB = Path("/work/shared/data/emodb/wav")
SPEC = ["speed=0.9,1.1", "noise=5:20", "gain=-6:6"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A synthetic corpus (4 speakers x 3 emotions x 2 utterances) with eGeMAPS and 2 copies each."""
    from serray.corpora.synth import generate_synthetic_corpus

    w = tmp_path_factory.mktemp("wave") / "w"
    generate_synthetic_corpus(w, n_speakers=4, utterances_per_emotion=2, emotions=("neutral", "happy", "sad"),
                              corpora=("synth_a",))
    return w


@pytest.fixture(scope="module")
def extracted(workdir):
    aug = parse_augment(SPEC, copies=2, seed=0)
    reports = extract_features(workdir, ["egemaps"], num_actors=0, progress=False, augment=aug)
    return aug, reports


# ---------------------------------------------------------------------- the spec


def test_tag_names_spec_copies_and_seed_not_the_spelling():
    a = parse_augment(SPEC, copies=2, seed=0)
    assert a.tag == parse_augment(["gain=-6:6", "noise=snr:5-20@pink", "speed=0.9,1.1"], copies=2, seed=0).tag
    others = [parse_augment(SPEC, copies=2, seed=1), parse_augment(SPEC, copies=3, seed=0),
              parse_augment(["speed=0.9,1.1", "noise=5:20@white", "gain=-6:6"], copies=2, seed=0),
              parse_augment(["speed=0.9,1.1"], copies=2, seed=0)]
    assert len({a.tag, *(o.tag for o in others)}) == 5
    assert parse_augment(a.cli().replace("--augment-copies 2 --augment-seed 0", "").replace("--augment ", "").split(),
                         copies=2, seed=0).tag == a.tag


@pytest.mark.parametrize("items, copies, word", [
    ([], 1, "at least one"), (["pitch=2"], 1, "NAME one of"), (["speed=3"], 1, "between 0.5 and 2"),
    (["gain=6:-6"], 1, "LOW > HIGH"), (["gain=loud"], 1, "not a number"), (["speed=1.1", "speed=0.9"], 1, "twice"),
    (["gain=-6:6"], 0, "--augment-copies"),
])
def test_bad_augmentation_is_one_line_naming_the_option(items, copies, word):
    with pytest.raises(ValueError, match=word) as err:
        parse_augment(items, copies=copies)
    assert "\n" not in str(err.value) and "--augment" in str(err.value)


def test_bad_noise_folder_is_one_clear_line(tmp_path):
    for folder, word in ((tmp_path / "missing", "not a folder"), (tmp_path, "no .wav or .flac")):
        with pytest.raises(ValueError, match=word) as err:
            parse_augment([f"noise=5:20@{folder}"])
        assert "\n" not in str(err.value)


def test_draws_are_deterministic_and_the_signal_changes_as_drawn(tmp_path):
    t = np.arange(SR, dtype=np.float32) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    aug = parse_augment(["speed=0.9", "noise=10:10@white", "gain=6:6"], copies=1, seed=0)
    d = aug.draw("a.wav", 0)
    assert d == aug.draw("a.wav", 0) and d != aug.draw("a.wav", 1) and d != aug.draw("b.wav", 0)
    y = apply_draw(x, SR, d)
    np.testing.assert_array_equal(y, apply_draw(x, SR, d))
    assert abs(len(y) - len(x) / 0.9) <= 2
    clean = apply_draw(x, SR, {"speed": 0.9})
    noise = y / 10 ** (6 / 20) - clean
    assert 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(10, abs=0.1)
    pink = np.abs(np.fft.rfft(apply_draw(np.ones(40091, np.float32), SR, {"snr_db": 0.0, "noise": "pink", "noise_seed": 1,
                                                                           "noise_offset": 0.0}) - 1)) ** 2
    assert 5 < pink[100:1000].mean() / pink[1000:10000].mean() < 20  # 1/f: a decade down, ten times the power
    sf.write(tmp_path / "n.wav", np.random.default_rng(0).normal(size=4000).astype(np.float32) * 0.1, SR)
    folder = parse_augment([f"noise=0:0@{tmp_path}"], copies=1, seed=0)
    assert folder.tag != parse_augment(["noise=0:0"], copies=1, seed=0).tag
    z = apply_draw(x, SR, folder.draw("a.wav", 0))
    assert len(z) == len(x) and not np.allclose(z, x)


# ---------------------------------------------------------------------- the cache


def test_copies_are_keyed_cached_and_never_mixed(workdir, extracted):
    aug, reports = extracted
    n = len(pd.read_parquet(Workdir(workdir).manifest("synth_a")))
    rep = reports[f"egemaps@{aug.tag}"]
    assert (rep.n_total, rep.n_extracted, rep.n_failed) == (2 * n, 2 * n, 0)
    again = extract_features(workdir, ["egemaps"], num_actors=0, progress=False, augment=aug)
    assert again[f"egemaps@{aug.tag}"].n_extracted == 0 and again[f"egemaps@{aug.tag}"].n_cached == 2 * n
    stored = json.loads(Workdir(workdir).augment_spec(aug.tag).read_text())
    assert stored["spec"] == aug.describe() and stored["cli"] == aug.cli()
    manifest = pd.read_parquet(Workdir(workdir).manifest("synth_a"))
    fs, table = load_copies(workdir, "egemaps", manifest, aug.tag)
    assert fs.utt_ids == [f"{u}@{aug.tag}.{i}" for u in manifest["utt_id"] for i in range(2)]
    assert table["source"].tolist() == [u for u in manifest["utt_id"] for _ in range(2)]
    orig = load_features(workdir, "egemaps", manifest)
    assert not np.allclose(fs.data[0::2], orig.data) and not np.allclose(fs.data[0::2], fs.data[1::2])
    other = parse_augment(SPEC, copies=2, seed=1)
    rep1 = extract_features(workdir, ["egemaps"], manifest.head(2), num_actors=0, progress=False, augment=other)
    assert rep1[f"egemaps@{other.tag}"].n_extracted == 4  # another seed: new copies, the first kept
    fs1, _ = load_copies(workdir, "egemaps", manifest.head(2), other.tag)
    assert not np.allclose(fs1.data, fs.data[:4])
    np.testing.assert_array_equal(load_copies(workdir, "egemaps", manifest, aug.tag)[0].data, fs.data)
    row = list_cached(workdir).set_index("set").loc["egemaps"]
    assert (row["n_utterances"], row["n_copies"]) == (n, 2 * n + 4)


# ---------------------------------------------------------------------- training


def _run(workdir, tag, model="mlp", **config):
    from serray.training.spec import RunSpec

    cfg = {"hidden_sizes": [8], "epochs": 2, "batch_size": 8} if model == "mlp" else {}
    if tag is not None:
        cfg["wave_augment"] = tag
    return RunSpec(str(workdir), model, features="egemaps", protocol="loso", config={**cfg, **config})


def test_loso_folds_hold_copies_of_training_utterances_only(workdir, extracted):
    from serray.training.experiment import prepare_experiment

    aug, _ = extracted
    run = _run(workdir, aug.tag)
    exp = prepare_experiment(run, run.resolved_config(), extract=False)
    table = exp.inputs.table
    assert len(table.utt_ids) == 3 * len(exp.manifest) and set(exp.manifest["utt_id"]).isdisjoint(table.utt_ids[len(exp.manifest):])
    source = dict(zip(table.utt_ids, table.copy_of))
    for fold in exp.folds:
        assert augmented_fold(fold, table, {}) is fold  # no key: the fold as it was
        f = augmented_fold(fold, table, {"wave_augment": aug.tag})
        copies = [u for u in f.train if source[u] is not None]
        assert sorted(copies) == sorted(f"{u}@{aug.tag}.{i}" for u in fold.train for i in range(2))
        assert {source[u] for u in copies} == set(fold.train)
        held_out = set(fold.validation) | set(fold.test)
        speakers = dict(zip(table.utt_ids, table.speaker))
        assert not any(source[u] in held_out for u in f.train if source[u] is not None)
        assert {speakers[u] for u in copies}.isdisjoint({speakers[u] for u in fold.test})
        np.testing.assert_array_equal(f.validation, fold.validation)
        np.testing.assert_array_equal(f.test, fold.test)


def test_the_guard_refuses_copies_outside_training(workdir, extracted):
    from dataclasses import replace

    from serray.training.experiment import prepare_experiment

    aug, _ = extracted
    run = _run(workdir, aug.tag)
    exp = prepare_experiment(run, run.resolved_config(), extract=False)
    table, fold = exp.inputs.table, exp.folds[0]
    test_copy = f"{fold.test[0]}@{aug.tag}.0"
    with pytest.raises(LeakageError, match="test part"):
        check_copies(replace(fold, test=np.append(fold.test, test_copy)), table.utt_ids, table.copy_of, table.speaker)
    with pytest.raises(LeakageError, match="outside its training part"):
        check_copies(replace(fold, train=np.append(fold.train, test_copy)), table.utt_ids, table.copy_of, table.speaker)
    with pytest.raises(ValueError, match="no copies of"):
        augmented_fold(fold, table, {"wave_augment": "aug-00000000"})


def test_same_seed_same_logits_and_the_run_records_the_augmentation(workdir, extracted):
    from serray.training.run import train_run

    aug, _ = extracted
    a = train_run(_run(workdir, aug.tag), resources=Resources(parallel=False), keep_models=False)
    b = train_run(_run(workdir, aug.tag), resources=Resources(parallel=False), run_name="again", keep_models=False)
    c = train_run(_run(workdir, None), resources=Resources(parallel=False), keep_models=False)
    for fa, fb in zip(a.folds, b.folds):
        np.testing.assert_array_equal(fa.test_logits, fb.test_logits)
    assert any(not np.array_equal(fa.test_logits, fc.test_logits) for fa, fc in zip(a.folds, c.folds))
    assert a.config_id != c.config_id and a.run != c.run
    assert a.record["wave_augment"][aug.tag]["spec"] == aug.describe()
    assert "wave_augment" not in c.record
    svm = [train_run(_run(workdir, aug.tag, "svm"), resources=Resources(parallel=False), keep_models=False, run_name=f"svm{i}") for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([f.test_logits for f in svm[0].folds]),
                                  np.concatenate([f.test_logits for f in svm[1].folds]))


def test_wave_augment_values_are_checked_and_a_space_names_its_tags():
    from serray.tune.space import SearchSpace

    assert wave_tags(None) == wave_tags("none") == ()
    with pytest.raises(ValueError, match="wave_augment must be none"):
        wave_tags("speed=0.9")
    sp = SearchSpace.from_dict({"model": "mlp", "params": {
        "wave_augment": {"type": "choice", "values": ["none", "aug-0123abcd", "aug-0123abcd+aug-ffff0000"]}}})
    assert space_tags(sp) == ("aug-0123abcd", "aug-ffff0000")


# ---------------------------------------------------------------------- CLI and real data


def test_cli_extracts_copies_and_prints_the_tag(workdir, extracted):
    from serray.cli import main

    aug, _ = extracted
    args = ["features", str(workdir), "--set", "egemaps", "--no-progress", "--num-actors", "0"]
    out = CliRunner().invoke(main, [*args, *(f"--augment={s}" for s in SPEC), "--augment-copies", "2"])
    assert out.exit_code == 0, out.output
    assert f"tag {aug.tag}" in out.output and "0 extracted" in out.output
    bad = CliRunner().invoke(main, [*args, "--augment", f"noise=5:20@{workdir}/nowhere"])
    assert bad.exit_code != 0 and "not a folder" in bad.output and "Traceback" not in bad.output


@pytest.mark.skipif(not EMODB.is_dir(), reason="EmoDB not available at /work/shared/data/emodb")
def test_emodb_copies_are_speed_perturbed_noisy_log_mel(tmp_path):
    files = sorted(EMODB.glob("*.wav"))[:2]
    manifest = pd.DataFrame({"utt_id": [f.stem for f in files], "path": [str(f) for f in files]})
    aug = parse_augment(["speed=0.9,1.1", "noise=10:10"], copies=2, seed=0)
    extract_features(tmp_path, ["mfb"], manifest, num_actors=0, progress=False, augment=aug)
    orig = load_features(tmp_path, "mfb", manifest)
    fs, table = load_copies(tmp_path, "mfb", manifest, aug.tag)
    for (_, row), arr in zip(table.iterrows(), fs.data):
        speed = aug.draw(Path(row["path"]).name, int(row["copy"]))["speed"]
        n = len(orig.data[orig.utt_ids.index(row["source"])])
        assert abs(len(arr) - n / speed) <= 3
        assert np.isfinite(arr).all()


@pytest.mark.slow
def test_a_search_space_searches_wave_augment(workdir, extracted, tmp_path):
    """A tune whose space chooses between no copies and a tag loads that tag's copies once and
    trains trials of both values (leaderboard and trial records name the value)."""
    import yaml

    from serray.cli import main

    aug, _ = extracted
    space = tmp_path / "svm-wave.yaml"
    space.write_text(yaml.safe_dump({"model": "svm", "params": {
        "wave_augment": {"type": "choice", "values": ["none", aug.tag]}, "C": {"type": "fixed", "value": 1.0}}}))
    args = ["tune", "svm", "--features", "egemaps", "--protocol", "loso", "--seed", "0", "--workdir", str(workdir),
            "--space", str(space), "--num-samples", "3", "--name", "wave-search"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    board = pd.read_csv(Workdir(workdir).tune_leaderboard("wave-search"))
    assert set(board["config/wave_augment"]) == {"none", aug.tag}
    assert (board["status"] == "completed").all(), board[["config/wave_augment", "status"]]
