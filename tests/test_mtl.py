"""The mtl family (paper 002): ELM back-end, posterior functionals, masked auxiliary losses,
STL equivalence at lambda = 0, the utterance stage and the fold record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serray.models import registry
from serray.models.contract import Batch, InputInfo
from serray.models.elm import ELM, scores_to_log_posteriors
from serray.models.mtl import build, context_window, posterior_functionals
from serray.protocols import make_folds
from serray.training.data import build_fold_data, class_list, make_label_table, pack_features
from serray.training.trainer import TorchFoldTrainer, softmax

from _training_helpers import sequence_features, synth_manifest

TINY = {"hidden": 8, "context": 2, "dnn_layers": 2, "elm_hidden": 16, "epochs": 2, "patience": 0, "batch_size": 8}


@pytest.fixture(scope="module")
def manifest():
    m = synth_manifest(n_speakers=4, per_class=4)
    spk = m["speaker"].str[-1].astype(int)
    m["naturalness"] = np.where(spk % 2 == 0, "acted", "natural")
    m.loc[m.index[::5], "gender"] = None
    return m


def _fold(manifest, config, fold_index=0):
    spec = registry.get("mtl")
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(config))
    packed = {"x": pack_features(sequence_features(manifest), manifest["utt_id"].tolist())}
    fold = make_folds(manifest, "loso", seed=0)[fold_index]
    return build_fold_data(packed, table, fold, "global")


def _config(**over):
    return registry.get("mtl").config(overrides={**TINY, **over})


# -- ELM -------------------------------------------------------------------------------
def test_elm_separates_a_separable_toy_set_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.normal(scale=0.4, size=(len(y), 2))
    y_new = np.repeat(np.arange(3), 10)
    x_new = centres[y_new] + rng.normal(scale=0.4, size=(len(y_new), 2))
    elm = ELM(hidden=50, ridge=1e-2, seed=3).fit(x, y, n_classes=3)
    assert (elm.predict(x) == y).all() and (elm.predict(x_new) == y_new).all()
    again = ELM(hidden=50, ridge=1e-2, seed=3).fit(x, y, n_classes=3)
    np.testing.assert_array_equal(elm.scores(x_new), again.scores(x_new))
    other = ELM(hidden=50, ridge=1e-2, seed=4).fit(x, y, n_classes=3)
    assert not np.allclose(elm.scores(x_new), other.scores(x_new))
    # the output weights are the ridge solution: more ridge, smaller weights
    stiff = ELM(hidden=50, ridge=1e3, seed=3).fit(x, y, n_classes=3)
    assert np.linalg.norm(stiff.beta) < np.linalg.norm(elm.beta)


def test_elm_errors():
    with pytest.raises(ValueError, match="elm_hidden must be >= 1"):
        ELM(hidden=0)
    with pytest.raises(ValueError, match="elm_ridge must be > 0"):
        ELM(ridge=0.0)
    with pytest.raises(RuntimeError, match="before fit"):
        ELM().scores(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="N > 0"):
        ELM().fit(np.zeros((0, 2)), np.zeros(0))


# -- functionals and frames ------------------------------------------------------------
def test_functionals_match_a_hand_computation_and_ignore_padding():
    # utterance 0: 3 valid frames; utterance 1: 2 valid frames, then padding with extreme values
    p = torch.tensor([
        [[0.7, 0.3], [0.1, 0.9], [0.25, 0.75], [0.5, 0.5]],
        [[0.15, 0.85], [0.6, 0.4], [1.0, 0.0], [0.0, 1.0]],
    ])
    got = posterior_functionals(p, torch.tensor([3, 2]), threshold=0.2)
    want = [
        # max         min          mean                      share > 0.2
        [0.7, 0.9, 0.1, 0.3, (0.7 + 0.1 + 0.25) / 3, (0.3 + 0.9 + 0.75) / 3, 2 / 3, 1.0],
        [0.6, 0.85, 0.15, 0.4, 0.375, 0.625, 0.5, 1.0],
    ]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert posterior_functionals(p, torch.tensor([3, 2]), threshold=0.5)[0, 6:].tolist() == pytest.approx([1 / 3, 2 / 3])


def test_context_window_centres_each_frame():
    x = torch.arange(10.0).reshape(1, 5, 2)
    w = context_window(x, 2)
    assert w.shape == (1, 5, 10)
    assert w[0, 2].tolist() == x[0].reshape(-1).tolist()  # frames 0..4 around frame 2
    assert w[0, 0, :4].tolist() == [0.0] * 4 and w[0, 0, 4:6].tolist() == [0.0, 1.0]


def test_padding_does_not_change_an_utterances_outputs():
    torch.manual_seed(0)
    for arch in ("dnn", "lstm"):
        model = build(_config(arch=arch), InputInfo((3,), 2, aux_classes={"gender": 2})).eval()
        x = torch.randn(1, 6, 3)
        alone = model.forward_batch(Batch({"x": x}, {"x": torch.tensor([6])}, None))
        padded = torch.cat([x, torch.full((1, 4, 3), 9.0)], dim=1)
        both = model.forward_batch(Batch({"x": torch.cat([padded, torch.randn(1, 10, 3)])}, {"x": torch.tensor([6, 10])}, None))
        torch.testing.assert_close(both["functionals"][:1], alone["functionals"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(both["logits"][:1], alone["logits"], rtol=1e-5, atol=1e-6)


# -- loss --------------------------------------------------------------------------------
def _aux_batch(gender, known):
    torch.manual_seed(1)
    return Batch(
        {"x": torch.randn(3, 7, 4)}, {"x": torch.tensor([7, 5, 3])}, torch.tensor([0, 1, 2]),
        aux={"gender": torch.tensor(gender), "naturalness": torch.tensor([0, 1, 0])},
        aux_mask={"gender": torch.tensor(known), "naturalness": torch.tensor([True, True, True])},
    )


def test_masked_auxiliary_loss_ignores_unknown_labels():
    model = build(_config(dropout=0.0), InputInfo((4,), 3, aux_classes={"gender": 2, "naturalness": 2})).train()
    a = _aux_batch([0, 1, 0], [True, False, True])
    b = _aux_batch([0, 0, 0], [True, False, True])  # only the unknown utterance's value differs
    la, pa = model.loss(a, model.forward_batch(a))
    lb, pb = model.loss(b, model.forward_batch(b))
    assert torch.equal(la, lb) and torch.equal(pa["gender"], pb["gender"])
    # ... and the term is the frame-level CE over the known utterances' valid frames only
    out = model.forward_batch(a)
    frames = out["frames"]["gender"]
    known = torch.cat([frames[0, :7], frames[2, :3]])
    want = torch.nn.functional.cross_entropy(known, torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(pa["gender"], want)
    total = pa["emotion"] + 0.1 * pa["gender"] + 0.1 * pa["naturalness"]
    torch.testing.assert_close(la, total)
    none = _aux_batch([0, 1, 0], [False, False, False])
    lz, pz = model.loss(none, model.forward_batch(none))
    assert pz["gender"].item() == 0.0


def test_lambda_zero_equals_single_task_training(manifest):
    """Both lambdas 0 (heads present, trained on nothing) gives the logits of a model without
    auxiliary heads at all, bit for bit; a positive lambda changes them."""
    stl_cfg = _config(gender="", naturalness="")
    zero_cfg = _config(lambda_gender=0.0, lambda_naturalness=0.0)
    runs = {}
    for name, cfg in (("stl", stl_cfg), ("zero", zero_cfg), ("mtl", _config(lambda_gender=0.5))):
        tr = TorchFoldTrainer("mtl", cfg, _fold(manifest, cfg), seed=2, device="cpu")
        runs[name] = (tr, tr.run())
    assert not runs["stl"][0].model.aux_heads and set(runs["zero"][0].model.aux_heads) == {"gender", "naturalness"}
    for part in ("validation_logits", "test_logits"):
        np.testing.assert_array_equal(getattr(runs["stl"][1], part), getattr(runs["zero"][1], part))
    assert [h["train_loss"] for h in runs["stl"][1].history] != [h["train_loss"] for h in runs["mtl"][1].history]
    assert not np.array_equal(runs["stl"][1].test_logits, runs["mtl"][1].test_logits)


# -- utterance stage and record ------------------------------------------------------------
def test_elm_is_fitted_on_the_training_part_and_gives_the_logits(manifest):
    cfg = _config()
    data = _fold(manifest, cfg)
    tr = TorchFoldTrainer("mtl", cfg, data, seed=0, device="cpu")
    assert tr.model.elm is None
    while not tr.stopped:
        tr.step()
    before = tr.predict_logits(data.test)  # log mean frame posteriors (the early-stopping view)
    whole, outputs = tr._forward_part(data.test)
    torch.testing.assert_close(torch.from_numpy(before), torch.log(outputs["functionals"][:, 6:9]))
    res = tr.finalize()
    elm = tr.model.elm
    assert elm is not None and elm.beta.shape == (cfg["elm_hidden"], 3)
    _, test_out = tr._forward_part(data.test)
    np.testing.assert_allclose(res.test_logits, elm.log_posteriors(test_out["functionals"].double().numpy()), rtol=1e-6)
    # refitting on the training part's functionals with the ELM's own seed gives the same weights
    _, train_out = tr._forward_part(data.train)
    refit = ELM(elm.hidden, elm.ridge, elm.seed).fit(train_out["functionals"].double().numpy(), data.train.y, n_classes=3)
    np.testing.assert_allclose(refit.beta, elm.beta)
    record = res.model_record
    assert record["elm"] == {"hidden": 16, "ridge": 1.0, "fitted": True}
    gender = record["aux_tasks"]["gender"]
    assert gender["active"] and gender["known"] == int((data.train.aux["gender"] >= 0).sum()) and gender["unknown"] > 0
    # same seed, same numbers
    again = TorchFoldTrainer("mtl", cfg, _fold(manifest, cfg), seed=0, device="cpu").run()
    np.testing.assert_array_equal(again.test_logits, res.test_logits)


def test_stored_logits_are_normalised_log_posteriors_with_the_elm_decision(manifest):
    """The ELM's least-squares scores are stored as log-probabilities: their softmax is a proper
    distribution (they are already normalised), the decision is the ELM's, and where no
    estimate falls below the floor they are log((score + 1) / 2), renormalised."""
    cfg = _config()
    data = _fold(manifest, cfg)
    tr = TorchFoldTrainer("mtl", cfg, data, seed=0, device="cpu")
    res = tr.run()
    for part, logits in ((data.validation, res.validation_logits), (data.test, res.test_logits)):
        _, out = tr._forward_part(part)
        scores = tr.model.elm.scores(out["functionals"].double().numpy())
        np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(logits.argmax(axis=1), scores.argmax(axis=1))
        np.testing.assert_allclose(np.exp(logits), softmax(logits), atol=1e-6)
    q = np.array([[0.6, -0.8, -1.5], [0.2, 0.1, -0.4], [-3.0, -2.0, -2.5]])
    logp = scores_to_log_posteriors(q)
    np.testing.assert_allclose(np.exp(logp[1]), [0.6 / 1.45, 0.55 / 1.45, 0.3 / 1.45], rtol=1e-5)
    assert np.isfinite(logp).all() and logp.argmax(axis=1).tolist() == [0, 0, 1]  # all below the floor: order kept
    assert (np.diff(scores_to_log_posteriors(np.array([[-1.5, -1.2, -0.999, -0.99, 0.0]]))[0]) > 0).all()


def test_constant_naturalness_in_the_training_part_is_inactive(manifest):
    m = manifest.copy()
    m["naturalness"] = np.where(m["speaker"] == "syn_s0", "natural", "acted")  # natural only in the test speaker
    cfg = _config(arch="lstm")
    spec = registry.get("mtl")
    table = make_label_table(m, class_list(m["emotion"]), aux_columns=spec.aux_columns(cfg))
    packed = {"x": pack_features(sequence_features(m), m["utt_id"].tolist())}
    fold = next(f for f in make_folds(m, "loso", seed=0) if "syn_s0" in f.name)
    tr = TorchFoldTrainer("mtl", cfg, build_fold_data(packed, table, fold, "global"), seed=0, device="cpu")
    res = tr.run()
    tasks = res.model_record["aux_tasks"]
    assert tasks["naturalness"]["head"] and tasks["naturalness"]["classes"] == 1 and not tasks["naturalness"]["active"]
    assert tasks["gender"]["active"]
    assert np.isfinite(res.test_logits).all()


def test_bad_config_values_fail_with_the_key():
    info = InputInfo((4,), 3)
    with pytest.raises(ValueError, match=r"arch must be one of \('dnn', 'lstm'\)"):
        build(_config(arch="gru"), info)
    with pytest.raises(ValueError, match="lambda_gender must be >= 0"):
        build(_config(lambda_gender=-0.1), info)
    with pytest.raises(ValueError, match="threshold must be in"):
        build(_config(threshold=1.5), info)
    with pytest.raises(ValueError, match="per-frame vectors"):
        build(_config(), InputInfo((2, 4, 4), 3))


def test_paper_arms_are_named_variants_for_dnn_and_lstm():
    """``serray seeds mtl --variant gender`` (and the other arms of paper 002) resolve as
    train_seeds resolves them: the left-out tasks' lambdas 0, the rest from the config."""
    from serray.training.seeds import parse_variant, variant_overrides
    from serray.training.spec import RunSpec
    from serray.training.trainer import check_config

    spec = registry.get("mtl")
    conditions = ("stl", "gender", "naturalness", "all")
    assert set(spec.variants) == {*conditions, *(f"{a}-{c}" for a in ("dnn", "lstm") for c in conditions)}

    def resolved(text, **config):
        name, over = parse_variant(text)
        return check_config(spec, RunSpec("W", "mtl", config=config).resolved_config(variant_overrides(spec, name, over)))

    keys = ("arch", "lambda_gender", "lambda_naturalness")
    assert [resolved("gender")[k] for k in keys] == ["dnn", 0.1, 0.0]
    assert [resolved("naturalness")[k] for k in keys] == ["dnn", 0.0, 0.1]
    assert [resolved("stl")[k] for k in keys] == ["dnn", 0.0, 0.0]
    assert resolved("all") == resolved("base") == check_config(spec, spec.config())
    # a tuned config keeps its weight and its architecture; dnn-/lstm- arms fix the architecture
    assert [resolved("gender", arch="lstm", lambda_gender=0.3)[k] for k in keys] == ["lstm", 0.3, 0.0]
    assert [resolved("dnn-all", arch="lstm")[k] for k in keys] == ["dnn", 0.1, 0.1]
    assert [resolved("lstm-stl")[k] for k in keys] == ["lstm", 0.0, 0.0]
    assert [resolved("lstm-gender:lambda_gender=0.2")[k] for k in keys] == ["lstm", 0.2, 0.0]


def test_search_space_loads_and_names_mtl_keys():
    from pathlib import Path

    from serray.tune.space import load_search_space

    space = load_search_space(Path(__file__).resolve().parents[1] / "serray" / "search_spaces" / "mtl.yaml")
    keys = {p.name for p in space.params}
    assert space.model == "mtl" and keys <= set(registry.get("mtl").config())
    assert {"lr", "lambda_gender", "lambda_naturalness", "arch", "threshold", "elm_hidden", "elm_ridge"} <= keys


# -- search objective: the finalized (ELM) model ---------------------------------------------
def _nested_value(manifest, ridge: float, model: str = "mtl") -> float:
    """The objective of a one-trial nested search of fold 0 with ``elm_ridge`` fixed at ``ridge``."""
    from types import SimpleNamespace

    from serray.tune.nested import NestedSearch, search_fold
    from serray.tune.space import SearchSpace

    cfg = _config(epochs=3)
    spec = registry.get("mtl")
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(cfg))
    inputs = SimpleNamespace(packed={"x": pack_features(sequence_features(manifest), manifest["utt_id"].tolist())}, table=table)
    space = SearchSpace.from_dict({"model": model, "params": {"elm_ridge": {"type": "fixed", "value": ridge}}})
    search = NestedSearch(model, cfg, space, 1, 1, 2, None, "global", 0, "cpu")
    summary, res = search_fold(search, inputs, make_folds(manifest, "loso", seed=0)[0])
    assert res.model_record["elm"]["ridge"] == ridge
    return summary["winner"]["val_ua"], res


def test_nested_objective_is_the_finalized_elm_models_validation_ua(manifest):
    """A trial's objective is the validation UA of the fitted ELM, so an ELM key changes it
    (before, it was the frame network's best epoch alone, the same for every ELM key)."""
    values = {}
    for ridge in (1e-3, 1e3):
        values[ridge], res = _nested_value(manifest, ridge)
        assert values[ridge] == pytest.approx(res.metrics()["val_ua"])
    assert values[1e-3] != values[1e3]


def test_tune_trial_objective_comes_from_the_finalized_logits(manifest):
    """serray tune: a completed mtl trial's objective is the pooled validation UA of its
    finalized (ELM) predictions, so elm_ridge changes it; other models keep the epochs' value."""
    import pandas as pd

    from serray.tune.trial import finalized_objective as _finalized_objective

    classes = class_list(manifest["emotion"])
    objectives = {}
    for ridge in (1e-3, 1e3):
        cfg = _config(elm_ridge=ridge)
        results = [TorchFoldTrainer("mtl", cfg, _fold(manifest, cfg, i), seed=0, device="cpu").run() for i in (0, 1)]
        preds = pd.concat([r.predictions_frame() for r in results], ignore_index=True)
        val = preds[preds["split"] == "validation"]
        finalized, objectives[ridge] = _finalized_objective("mtl", preds, classes, epochs_value=0.123)
        assert objectives[ridge] == finalized
        assert finalized == pytest.approx(float(np.mean([(val["pred"][val["label"] == c] == c).mean()
                                                        for c in sorted(set(val["label"]))])))
        assert _finalized_objective("mlp", preds, classes, epochs_value=0.123) == (finalized, 0.123)
    assert objectives[1e-3] != objectives[1e3]


def test_lstm_frames_of_a_padded_batch_are_each_utterance_alone():
    """The LSTM runs unpacked over the padded batch (torch's packed CPU kernel is 10-15x slower
    for unequal lengths): each valid frame's output and gradient equal the utterance run alone,
    and padded frames give zeros, as unpacking did."""
    from serray.models.mtl import FrameLSTM

    torch.manual_seed(0)
    lstm = FrameLSTM(5, 8, 2, 0.0).eval()
    x, lengths = torch.randn(3, 7, 5), torch.tensor([7, 3, 5])
    x[1, 3:] = float("nan")  # whatever the padding holds, it comes after the valid frames
    h = lstm(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = lstm(x[i:i + 1, :n], lengths[i:i + 1])[0]
        torch.testing.assert_close(h[i, :n], alone, rtol=1e-6, atol=1e-6)
        assert (h[i, n:] == 0).all()
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.nan_to_num(x), lengths, batch_first=True, enforce_sorted=False)
    ref, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm.lstm(packed)[0], batch_first=True, total_length=7)
    torch.testing.assert_close(h, ref, rtol=1e-6, atol=1e-6)
    weight = lstm.lstm.weight_hh_l0
    grad_padded = torch.autograd.grad(h.sum(), weight)[0]
    grad_alone = sum(torch.autograd.grad(lstm(x[i:i + 1, :n], lengths[i:i + 1]).sum(), weight)[0]
                     for i, n in enumerate(lengths.tolist()))
    torch.testing.assert_close(grad_padded, grad_alone, rtol=1e-5, atol=1e-6)


def test_a_new_variant_can_start_from_a_named_arm():
    """``--variant NEW=ARM:key=value`` starts from the model's arm ARM (recipe 002's LSTM at
    another learning rate) and resolves exactly as spelling ARM's overrides out does."""
    from serray.training.run import config_id
    from serray.training.seeds import parse_variant, variant_overrides
    from serray.training.spec import RunSpec
    from serray.training.trainer import check_config

    spec = registry.get("mtl")

    def resolved(text):
        name, over = parse_variant(text, spec)
        return name, check_config(spec, RunSpec("W", "mtl").resolved_config(variant_overrides(spec, name, over)))

    name, cfg = resolved("lstm-stl-lr5e-4=lstm-stl:lr=5e-4")
    assert name == "lstm-stl-lr5e-4"
    spelled = resolved("lstm-stl-lr5e-4:arch=lstm,lr=5e-4,lambda_gender=0.0,lambda_naturalness=0.0")[1]
    assert config_id("mtl", cfg) == config_id("mtl", spelled)  # the same run settings, the same config id
    assert (cfg["arch"], cfg["lambda_gender"], cfg["lambda_naturalness"], cfg["lr"]) == ("lstm", 0.0, 0.0, 0.0005)
    assert resolved("lstm-gender-x=lstm-gender:lambda_naturalness=0.5")[1]["lambda_naturalness"] == 0.5  # given keys win
    assert resolved("mine=base:lr=1e-3")[1] == check_config(spec, spec.config(overrides={"lr": 1e-3}))
    with pytest.raises(ValueError, match="no variant 'lstm-mmoe' to start from .*lstm-stl"):
        parse_variant("x=lstm-mmoe:lr=1e-3", spec)
    with pytest.raises(ValueError, match="'gender' is already a variant"):
        parse_variant("gender=lstm-gender:lr=1e-3", spec)
    with pytest.raises(ValueError, match="NEW=ARM needs the model"):
        parse_variant("x=lstm-stl:lr=1e-3")
    with pytest.raises(ValueError, match="expected NAME"):
        parse_variant("x=:lr=1e-3", spec)
