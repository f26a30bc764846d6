"""Variadic model inputs (one role per named feature set): parsing of --features, the
registry's checks, and a run from the feature sets to a trained fold with one expert each."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from serray.cli import main
from serray.models import registry
from serray.models.contract import InputSpec
from serray.models.registry import ModelSpec
from serray.training.spec import RunSpec, parse_feature_sets

from _training_helpers import sequence_features, synth_manifest, vector_features

MANY = {"experts": InputSpec("sequence", ("mfb", "egemaps"), other_kinds=("vector",), variadic=True)}
MIXED = {"x": InputSpec("sequence", ("mfb",)), "extra": InputSpec("vector", ("egemaps",), variadic=True)}


def test_variadic_input_takes_one_role_per_named_set():
    assert parse_feature_sets(None, MANY) == {"mfb": "mfb", "egemaps": "egemaps"}
    assert parse_feature_sets("mfb+mfcc+lld+egemaps", MANY) == {s: s for s in ("mfb", "mfcc", "lld", "egemaps")}
    assert list(parse_feature_sets("egemaps+mfb", MANY)) == ["egemaps", "mfb"]  # order kept: the first is primary
    assert parse_feature_sets("seq1=lld+seq2=mfcc+vec=compare", MANY) == {"seq1": "lld", "seq2": "mfcc", "vec": "compare"}
    with pytest.raises(ValueError, match="names input 'mfb' twice.*a=mfb\\+b=mfb"):
        parse_feature_sets("mfb+mfb", MANY)
    # fixed roles first, by position or name; the rest go to the variadic input, else its defaults
    assert parse_feature_sets("lld", MIXED) == {"x": "lld", "egemaps": "egemaps"}
    assert parse_feature_sets("lld+compare+egemaps", MIXED) == {"x": "lld", "compare": "compare", "egemaps": "egemaps"}
    assert parse_feature_sets("v=compare+x=mfcc", MIXED) == {"x": "mfcc", "v": "compare"}


def test_fixed_inputs_parse_as_before():
    fixed = {"frames": InputSpec("sequence", ("mfb",)), "groups": InputSpec("vector", ("egemaps",))}
    assert parse_feature_sets("lld", fixed) == {"frames": "lld", "groups": "egemaps"}
    assert parse_feature_sets("groups=compare", fixed) == {"frames": "mfb", "groups": "compare"}
    with pytest.raises(ValueError, match="names 3 sets but model 'm' takes 2 input"):
        parse_feature_sets("a+b+c", fixed, "m")
    with pytest.raises(ValueError, match="has no input 'vec'"):
        parse_feature_sets("vec=compare", fixed, "m")


def test_registry_checks_variadic_inputs():
    def spec(inputs, backend="torch"):
        return ModelSpec("_v", backend, inputs, {}, build=lambda c, i: None)

    with pytest.raises(ValueError, match="at most one variadic input, and it must be the last"):
        registry.register(spec({"a": MANY["experts"], "b": InputSpec("vector", ("egemaps",))}))
    with pytest.raises(ValueError, match="exactly one vector input"):
        registry.register(spec({"a": InputSpec("vector", ("egemaps",), variadic=True)}, backend="sklearn"))
    with pytest.raises(ValueError, match="needs default_features"):
        InputSpec("vector", variadic=True)
    s = spec(MIXED)
    assert s.variadic == "extra" and s.input_spec("compare") is MIXED["extra"] and s.input_spec("x") is MIXED["x"]
    assert s.default_features == ("mfb", "egemaps")
    with pytest.raises(ValueError, match="has no input 'y'"):
        spec({"x": MIXED["x"]}).input_spec("y")


@pytest.fixture()
def sets_workdir(tmp_path, monkeypatch):
    """A work directory whose load_features serves two sequence and two vector sets."""
    from serray.manifest import write_manifest

    m = synth_manifest(n_speakers=4, per_class=4)
    write_manifest(m, tmp_path, "syn")
    sets = {"mfb": sequence_features(m), "mfcc": sequence_features(m, dim=5, seed=1), "egemaps": vector_features(m),
            "compare": vector_features(m, dim=7, seed=2)}

    def fake_load(workdir, set_name, manifest, params=None):
        return sets[set_name]

    import serray.features

    monkeypatch.setattr(serray.features, "load_features", fake_load)
    return tmp_path


@pytest.mark.parametrize("features,kinds", [
    ("mfb+egemaps", {"mfb": "sequence", "egemaps": "vector"}),
    ("mfb+mfcc+compare+egemaps", {"mfb": "sequence", "mfcc": "sequence", "compare": "vector", "egemaps": "vector"}),
    ("seq1=mfb+vec=egemaps", {"seq1": "sequence", "vec": "vector"}),
])
def test_a_run_builds_one_expert_per_named_feature_set(sets_workdir, features, kinds):
    from serray.training.experiment import prepare_experiment
    from serray.training.trainer import train_fold

    run = RunSpec(str(sets_workdir), "mgnas", features=features, preset="small")
    cfg = run.resolved_config({"epochs": 1, "batch_size": 16, "samples_per_class": 4, "units": 6, "att_dim": 4,
                               "seq_experts": {"default": {"conv": 2, "hidden": 3}}})
    exp = prepare_experiment(run, cfg, extract=False)
    assert exp.feature_kinds == kinds and list(exp.inputs.packed) == list(kinds)
    assert RunSpec(str(sets_workdir), "mgnas", features=run.features_text()).feature_sets() == run.feature_sets()
    res = train_fold("mgnas", cfg, exp.inputs, exp.folds[0], normalize="global", seed=0, device="cpu")
    assert res.model_record["experts"] == list(kinds) and np.isfinite(res.test_logits).all()


def test_a_set_of_a_kind_the_input_does_not_take_fails_with_the_kinds(sets_workdir):
    from serray.training.experiment import prepare_experiment

    run = RunSpec(str(sets_workdir), "dcnn", features="egemaps")
    with pytest.raises(ValueError, match="takes sequence features but 'egemaps' is vector"):
        prepare_experiment(run, run.resolved_config(), extract=False)


def test_help_shows_the_variadic_syntax():
    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert "mfb+mfcc+lld+egemaps" in text
