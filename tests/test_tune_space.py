"""Search-space YAML: parsing, validation errors naming file and key, define-by-run."""

from __future__ import annotations

import optuna
import pytest

from serray.tune.space import SearchSpace, SearchSpaceError, load_search_space

GOOD = {
    "model": "mlp",
    "params": {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "hidden": {"type": "int", "low": 32, "high": 256, "step": 32},
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
        "epochs": {"type": "fixed", "value": 7},
    },
    "conditional": [{"when": {"optimizer": ["sgd"]}, "params": {"momentum": {"type": "uniform", "low": 0.0, "high": 0.9}}}],
}


def _sample(space, n=30, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        fixed = space.define_by_run(t)
        out.append({**t.params, **fixed})
        study.tell(t, 0.0)
    return out


def test_define_by_run_respects_bounds_and_conditions():
    space = SearchSpace.from_dict(GOOD, "good.yaml")
    assert space.names() == ["lr", "dropout", "hidden", "optimizer", "epochs", "momentum"]
    pts = _sample(space)
    for p in pts:
        assert 1e-4 <= p["lr"] <= 1e-1 and 0 <= p["dropout"] <= 0.5
        assert p["hidden"] % 32 == 0 and p["epochs"] == 7
        assert ("momentum" in p) == (p["optimizer"] == "sgd")
    assert {p["optimizer"] for p in pts} == {"sgd", "adam"}


def test_pinned_keys_are_fixed_and_their_conditions_still_apply():
    space = SearchSpace.from_dict(GOOD, "good.yaml")
    adam = _sample(space.pin({"optimizer": "adam", "epochs": 3, "not_searched": 1}))
    assert {p["optimizer"] for p in adam} == {"adam"} and {p["epochs"] for p in adam} == {3}
    assert not any("momentum" in p or "not_searched" in p for p in adam)
    sgd = _sample(space.pin({"optimizer": "sgd", "lr": 0.5}))
    assert all(p["optimizer"] == "sgd" and p["lr"] == 0.5 and 0 <= p["momentum"] <= 0.9 for p in sgd)
    assert len({p["momentum"] for p in sgd}) > 1  # the conditional parameter is still searched
    assert space.pin({"lr": 0.5}).names() == space.names()  # leaderboard columns unchanged


def test_point_projects_default_config():
    space = SearchSpace.from_dict(GOOD, "good.yaml")
    cfg = {"lr": 1e-3, "dropout": 0.2, "hidden": 128, "optimizer": "sgd", "epochs": 50, "momentum": 0.5, "other": 1}
    assert space.point(cfg) == {"lr": 1e-3, "dropout": 0.2, "hidden": 128, "optimizer": "sgd", "momentum": 0.5}
    assert space.point({**cfg, "lr": 1.0}) is None


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["params"].__setitem__("lr", {"type": "loguniform", "low": 0, "high": 1}), "params: lr: loguniform needs low > 0"),
        (lambda d: d["params"].__setitem__("lr", {"type": "uniform", "low": 1, "high": 0}), "params: lr: low .* smaller than high"),
        (lambda d: d["params"].__setitem__("lr", {"type": "gauss", "low": 1}), "params: lr: type must be one of"),
        (lambda d: d["params"].__setitem__("lr", {"type": "uniform", "low": 0}), r"params: lr: type uniform needs \['high'\]"),
        (lambda d: d["params"].__setitem__("lr", {"type": "choice", "values": []}), "params: lr: values must be a non-empty list"),
        (lambda d: d["params"].__setitem__("lr", {"type": "uniform", "low": 0, "high": 1, "hgih": 2}), "unknown key"),
        (lambda d: d.__setitem__("conditional", [{"when": {"dropout": [0.1]}, "params": {"x": {"type": "fixed", "value": 1}}}]), "when.dropout: must name a choice"),
        (lambda d: d.__setitem__("conditional", [{"when": {"optimizer": ["rmsprop"]}, "params": {"x": {"type": "fixed", "value": 1}}}]), "not among"),
        (lambda d: d.pop("model"), "'model' must name the model"),
        (lambda d: d.__setitem__("parms", {}), "unknown top-level key"),
    ],
)
def test_malformed_space_names_file_key_and_problem(mutate, match):
    import copy

    d = copy.deepcopy(GOOD)
    mutate(d)
    with pytest.raises(SearchSpaceError, match=match) as ei:
        SearchSpace.from_dict(d, "bad.yaml")
    assert "bad.yaml" in str(ei.value)


def test_unknown_hyperparameter_and_bad_yaml(tmp_path):
    space = SearchSpace.from_dict(GOOD, "good.yaml")
    with pytest.raises(SearchSpaceError, match=r"\['hidden'"):
        space.check_keys({"lr": 1, "dropout": 0, "optimizer": "sgd", "epochs": 1, "momentum": 0})
    p = tmp_path / "broken.yaml"
    p.write_text("model: mlp\nparams: {lr: [\n")
    with pytest.raises(SearchSpaceError, match="broken.yaml: not valid YAML"):
        load_search_space(p)
    with pytest.raises(SearchSpaceError, match="not found"):
        load_search_space(tmp_path / "missing.yaml")


def test_a_parameter_that_needs_an_unset_key_is_not_searched():
    """``needs: KEY``: searched only when the run's config sets KEY; otherwise fixed at the
    config's value, and what is conditional on it follows that value."""
    import copy

    d = copy.deepcopy(GOOD)
    d["params"]["optimizer"]["needs"] = "domain"
    space = SearchSpace.from_dict(d, "needs.yaml")
    cfg = {"lr": 1e-3, "dropout": 0.2, "hidden": 64, "optimizer": "adam", "epochs": 7, "momentum": 0.0}
    for unset in (None, "", False):
        fixed, unmet = space.for_config({**cfg, "domain": unset})
        assert unmet == {"optimizer": ["domain"]}
        pts = _sample(fixed, n=10)
        assert {p["optimizer"] for p in pts} == {"adam"} and not any("momentum" in p for p in pts)
        assert len({p["lr"] for p in pts}) > 1  # the rest is still searched
    same, unmet = space.for_config({**cfg, "domain": "language"})
    assert unmet == {} and same is space
    assert {p["optimizer"] for p in _sample(same)} == {"sgd", "adam"}
    with pytest.raises(SearchSpaceError, match=r"optimizer \(needs: domain\)"):
        space.check_keys(cfg)
    d["params"]["optimizer"]["needs"] = [""]
    with pytest.raises(SearchSpaceError, match="needs.yaml: params: optimizer: needs must name a config key"):
        SearchSpace.from_dict(d, "needs.yaml")


PAPER_000_GRID = {"lr": (1e-3, 5e-4, 1e-4), "batch_size": (32, 64)}


@pytest.mark.parametrize("model", ["dcnn", "cnn_lstm", "mtl_cnn", "nhnn"])
def test_paper_000_spaces_search_the_papers_grid(model):
    """Paper 000 sec. 5: batch {32, 64} x lr {1e-3, 5e-4, 1e-4} for all its models; no
    stage plan (NHNN's fc / fc_conv are nhnn's variants, not dcnn fine-tuning) and no arm."""
    from serray.models import registry

    space = load_search_space(model)
    params = {p.name: p for p in space.params}
    for key, values in PAPER_000_GRID.items():
        assert params[key].type == "choice" and tuple(params[key].values) == values
    assert "stages" not in params and "freeze" not in params
    defaults = registry.get(model).config()
    space.check_keys(defaults)
    if model in ("dcnn", "cnn_lstm"):
        assert set(params) == set(PAPER_000_GRID)
        assert space.point(defaults) == {"lr": defaults["lr"], "batch_size": defaults["batch_size"]}
