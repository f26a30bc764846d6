"""A run's options resolved into a RunSpec by the library (serray.training.resolve), not the CLI."""

from __future__ import annotations

import pytest

from serray import io
from serray.training.resolve import resolve_run_spec
from serray.training.spec import RunSpec


def test_config_file_best_yaml_defaults_and_set_merge_in_one_place(tmp_path):
    best = tmp_path / "best.yaml"
    io.write_yaml({"model": "svm", "features": "compare", "protocol": "kfold", "k": 3, "normalize": "speaker",
                   "config": {"C": 3.0, "kernel": "linear"}}, best)
    said: list[str] = []
    spec = resolve_run_spec("svm", {"workdir": str(tmp_path), "config_file": str(best), "assignments": ["C=0.5"],
                                    "normalize": "global", "corpora": ["a"]}, seed=2, announce=said.append)
    assert spec.config == {"C": 0.5, "kernel": "linear"}  # --set over the file
    assert (spec.features, spec.protocol, spec.k, spec.normalize) == ("compare", "kfold", 3, "global")  # given wins
    assert (spec.seed, spec.corpora) == (2, ("a",))
    # normalize was given, so it is not one of the defaults taken from the file
    assert said == [f"defaults from {best}: features=compare, protocol=kfold, k=3 (options given on the command line win)"]
    assert RunSpec.from_options("svm", {"workdir": str(tmp_path), "config_file": str(best)}).k == 3


def test_cli_only_maps_its_flags(tmp_path):
    """The CLI's helper gives exactly the library's RunSpec for the same options."""
    from serray.commands._common import run_spec_from_options

    opts = {"workdir": str(tmp_path), "features": "vec", "assignments": ("lr=0.01",), "k": 4, "protocol": "kfold",
            "feature_params": ("layer=6",), "preset": None, "corpora": ()}
    assert run_spec_from_options("mlp", opts, seed=1, announce=False) == resolve_run_spec("mlp", opts, seed=1)


@pytest.mark.parametrize("options, needle", [
    ({"assignments": ["lr"]}, "--set expects KEY=VALUE, got 'lr'"),
    ({"feature_params": ["layer"]}, "--feature-param expects KEY=VALUE, got 'layer', e.g. model=/models/hubert-base"),
    ({"assignments": ["no_such_key=1"]}, "no_such_key"),
    ({"domain": "language"}, "--domain: model 'mlp' has no domain"),
])
def test_bad_options_fail_with_one_line(tmp_path, options, needle):
    with pytest.raises(ValueError) as err:
        resolve_run_spec("mlp", {"workdir": str(tmp_path), **options})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_truncated_best_yaml_is_refused_naming_the_file(tmp_path):
    best = tmp_path / "best.yaml"
    io.write_yaml({"model": "svm", "k": 3, "config": {"C": 0.0012520512}}, best)
    text = best.read_text()
    best.write_text(text[: text.index("0.0012") + 6])  # cut mid-number, as `head -c` would
    with pytest.raises(ValueError) as err:
        resolve_run_spec("svm", {"workdir": str(tmp_path), "config_file": str(best)})
    assert str(best) in str(err.value)


def test_best_yaml_gives_its_corpora_and_cross_corpus_pair_only_where_they_apply(tmp_path):
    best = tmp_path / "best.yaml"
    io.write_yaml({"model": "svm", "protocol": "cross-corpus", "train_corpora": ["emodb"], "test_corpora": ["emovo"],
                   "corpora": ["emodb", "emovo"], "config": {"C": 1.0}}, best)
    opts = {"workdir": str(tmp_path), "config_file": str(best)}
    spec = resolve_run_spec("svm", opts)
    assert (spec.corpora, spec.train_corpora, spec.test_corpora) == (("emodb", "emovo"), ("emodb",), ("emovo",))
    said: list[str] = []
    spec = resolve_run_spec("svm", {**opts, "protocol": "loso", "corpora": ["emodb"]}, announce=said.append)
    assert (spec.protocol, spec.corpora, spec.train_corpora, spec.test_corpora) == ("loso", ("emodb",), None, None)
    assert not said  # corpora given on the command line; the cross-corpus pair does not apply to loso
    spec = resolve_run_spec("svm", {**opts, "train_corpora": ["emovo"], "test_corpora": ["emodb"]})
    assert (spec.train_corpora, spec.test_corpora) == (("emovo",), ("emodb",))
