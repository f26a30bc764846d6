"""Multi-gating + NAS family (paper 001): contrastive loss, balanced batches, hard-concrete
gates, softmax gates and domain towers, the AUX_INPUTS trainer hook, --domain, search space."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from serray.models import registry
from serray.models.contract import Batch, InputInfo
from serray.models.mgnas_contrastive import balanced_batches, centroid_contrastive_loss
from serray.models.mgnas_gates import HardConcreteGate
from serray.protocols import make_folds
from serray.training.data import build_fold_data, class_list, make_label_table, pack_features
from serray.training.trainer import TorchFoldTrainer, _PartBatches
from serray.tune.space import load_search_space

from _training_helpers import sequence_features, synth_manifest, vector_features

SMALL = {"seq_experts": {"default": {"conv": 3, "hidden": 4}}, "att_dim": 6, "proj_dim": 5, "units": 8, "dropout": 0.0}
SHAPES = {"seq1": (6,), "seq2": (4,), "vec": (5,)}  # roles named as by --features seq1=mfb+seq2=mfcc+vec=egemaps
KINDS = {"seq1": "sequence", "seq2": "sequence", "vec": "vector"}


def _model(n_classes=3, domains=("de", "it"), **over):
    spec = registry.get("mgnas")
    info = InputInfo((6,), n_classes, n_domains=len(domains), shapes=SHAPES, aux_classes={"domain": len(domains)},
                     aux_names={"domain": tuple(domains)}, kinds=KINDS)
    return spec.build(spec.config(overrides={**SMALL, **over}), info)


def _batch(n=8, domain=None, seed=0, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 10, (n,), generator=g)
    inputs = {"seq1": torch.randn(n, 10, 6, generator=g), "seq2": torch.randn(n, 10, 4, generator=g),
              "vec": torch.randn(n, 5, generator=g)}
    y = torch.arange(n) % n_classes
    b = Batch(inputs, {"seq1": lengths, "seq2": lengths.clone()}, y)
    if domain is not None:
        b.aux["domain"] = domain.clamp(min=0)
        b.aux_mask["domain"] = domain >= 0
    return b


# -- contrastive loss ---------------------------------------------------------------------


def _hand_loss(x, y, w, b, min_count=5):
    """Eq. 3-6 written out with loops over numpy arrays."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    kept = [c for c in sorted(set(y.tolist())) if (y == c).sum() > min_count]
    if not kept:
        return 0.0
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    z = {i: unit(x[i]) for i in range(len(y)) if y[i] in kept}
    cent = {c: np.mean([z[i] for i in z if y[i] == c], axis=0) for c in kept}
    total = 0.0
    for i, zi in z.items():
        s = [w * float(zi @ unit(cent[c])) + b for c in kept]
        total += -(s[kept.index(y[i])] - math.log(sum(math.exp(v) for v in s)))
    return total


def test_contrastive_loss_matches_hand_computation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(15, 4))
    y = np.array([0] * 6 + [1] * 7 + [2] * 2)
    got = centroid_contrastive_loss(torch.tensor(x, dtype=torch.float64), torch.tensor(y),
                                    torch.tensor(2.5, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64))
    assert float(got) == pytest.approx(_hand_loss(x, y, 2.5, -1.0), rel=1e-9)
    assert float(got) > 0
    # two tight, orthogonal clusters: cos 1 to the own centroid, 0 to the other
    tight = np.array([[1.0, 0.0]] * 6 + [[0.0, 2.0]] * 6)
    v = centroid_contrastive_loss(torch.tensor(tight), torch.tensor([0] * 6 + [1] * 6), torch.tensor(10.0), torch.tensor(-5.0))
    assert float(v) == pytest.approx(12 * math.log1p(math.exp(-10.0)), rel=1e-6)


def test_emotions_with_five_or_fewer_samples_contribute_nothing():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(16, 3)), requires_grad=True)
    y = torch.tensor([0] * 6 + [1] * 6 + [2] * 4)
    w, b = torch.tensor(10.0), torch.tensor(-5.0)
    full = centroid_contrastive_loss(x, y, w, b)
    without = centroid_contrastive_loss(x[:12], y[:12], w, b)
    assert float(full.detach()) == pytest.approx(float(without.detach()), rel=1e-12)
    full.backward()
    assert x.grad[12:].abs().sum() == 0 and x.grad[:12].abs().sum() > 0
    few = centroid_contrastive_loss(x, torch.tensor([0] * 5 + [1] * 5 + [2] * 5 + [3]), w, b)
    assert float(few.detach()) == 0.0 and few.requires_grad
    # exactly five is still too few, six enters
    y6 = torch.tensor([0] * 6 + [1] * 5 + [2] * 5)
    assert float(centroid_contrastive_loss(x.detach(), y6, w, b)) == 0.0  # one emotion left: softmax over one centroid
    assert float(centroid_contrastive_loss(x.detach(), y6, w, b, min_count=4)) > 0


def test_balanced_batches_take_turns_and_cover_every_sample():
    y = np.array([0] * 30 + [1] * 9 + [2] * 5 + [3] * 16)
    rng = np.random.default_rng(1)
    batches = balanced_batches(y, batch_size=16, per_class=8, rng=rng)
    assert len(batches) == math.ceil(len(y) / 16)
    for b in batches:
        counts = np.bincount(y[b], minlength=4)
        assert sorted(counts[counts > 0].tolist()) in ([8, 8], [5, 8])  # two emotions, 8 each (class 2 has 5)
    used = np.bincount([c for b in batches for c in set(y[b].tolist())], minlength=4)
    assert used.max() - used.min() <= 1  # emotions take turns
    again = balanced_batches(y, 16, 8, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="samples_per_class"):
        balanced_batches(y, 16, 0, rng)


# -- hard-concrete gates --------------------------------------------------------------------


def test_hard_concrete_gates_in_unit_interval_with_exact_zeros_and_ones():
    torch.manual_seed(0)
    gate = HardConcreteGate((20000,), beta=0.9, gamma=-0.1, zeta=2.0, init=0.0).train()
    xi = gate()
    v = xi.detach()
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    zeros, ones = float((v == 0).float().mean()), float((v == 1).float().mean())
    assert zeros > 0.01 and ones > 0.01 and (zeros + ones) < 0.99  # mass at both ends and in between
    xi.sum().backward()
    assert gate.raw.grad.abs().sum() > 0


def test_hard_concrete_gate_is_deterministic_in_eval():
    gate = HardConcreteGate((3, 4), init=0.0)
    gate.raw.data = torch.linspace(-3, 3, 12).view(3, 4)
    gate.eval()
    a, b = gate(), gate()
    assert torch.equal(a, b)
    expected = (torch.sigmoid(gate.log_kappa) * 2.1 - 0.1).clamp(0, 1)
    assert torch.allclose(a, expected)
    assert float(a.detach().min()) == 0.0 and float(a.detach().max()) == 1.0
    with pytest.raises(ValueError, match="nas_gamma"):
        HardConcreteGate((2,), gamma=0.1)


# -- gates and towers ---------------------------------------------------------------------


@pytest.mark.parametrize("gating", ["omoe", "mmoe", "nas"])
def test_gate_weights_sum_to_one_per_domain(gating):
    torch.manual_seed(0)
    model = _model(gating=gating).eval()
    domain = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    out = model.forward_batch(_batch(domain=domain))
    assert torch.allclose(out["gates"].sum(dim=1), torch.ones(8), atol=1e-6)
    whole = Batch({}, {}, torch.zeros(8, dtype=torch.long))
    model.after_training(whole, out)
    model.after_evaluation("test", whole, {**out, "domain": torch.tensor([0] * 8)})
    rec = json.loads(json.dumps(model.fold_record()))
    assert rec["gating"] == gating and rec["domains"] == ["de", "it"] and rec["experts"] == ["seq1", "seq2", "vec"]
    assert rec["gate_counts"] == {"train": {"de": 4, "it": 4}, "test": {"de": 8}}
    for name in ("de", "it"):
        w = rec["gate_weights"]["train"][name]
        assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-6)
    assert sum(rec["gate_weights"]["test"]["de"]) == pytest.approx(1.0, abs=1e-6)
    if gating == "mmoe":  # one gate per domain: the two domains' mean weights differ
        assert rec["gate_weights"]["train"]["de"][0] != pytest.approx(rec["gate_weights"]["train"]["it"][0], abs=1e-6)
    if gating == "nas":
        xi = rec["nas_gates"]["it"]["seq2"]
        assert len(xi) == 3 and all(0.0 <= v <= 1.0 for v in xi) and set(rec["nas_closed"]) == {"de", "it"}
    else:
        assert "nas_gates" not in rec
    from serray.report.model_records import collect  # the report's tables and heatmaps name the experts

    parts = collect([(0, 0, rec)])
    assert list(parts.matrix_mean("gate_weights.train").columns) == ["seq1", "seq2", "vec"]
    if gating == "nas":
        assert list(parts.matrix_mean("nas_gates.it").columns) == ["seq1", "seq2", "vec"]


def test_each_domain_uses_its_own_tower_and_unknown_domain_the_mean():
    torch.manual_seed(0)
    model = _model(gating="mmoe").eval()
    domain = torch.tensor([0, 0, 1, 1, -1, -1, 0, 1])
    batch = _batch(domain=domain)
    before = model.forward_batch(batch)["logits"].detach()
    with torch.no_grad():
        for p in model.towers[1].parameters():
            p.add_(1.0)
    after = model.forward_batch(batch)["logits"].detach()
    d0, d1, unk = domain == 0, domain == 1, domain < 0
    assert torch.equal(before[d0], after[d0])
    assert not torch.allclose(before[d1], after[d1]) and not torch.allclose(before[unk], after[unk])


def test_domain_lacking_an_emotion_never_predicts_it():
    torch.manual_seed(0)
    model = _model(n_classes=3, gating="mmoe")

    class Part:
        y = np.array([0, 1, 0, 1, 2, 2])
        aux = {"domain": np.array([0, 0, 0, 1, 1, 1])}

    model.prepare(Part())
    model.eval()
    out = model.forward_batch(_batch(domain=torch.tensor([0] * 4 + [1] * 4)))
    pred = out["logits"].argmax(dim=1)
    assert not (pred[:4] == 2).any() and not (pred[4:] == 0).any()
    assert (out["logits"][:4, 2] < -1e3).all() and (out["logits"][4:, 1] > -1e3).all()


def test_alpha_weighs_the_contrastive_term_and_zero_alpha_is_plain_cross_entropy():
    torch.manual_seed(0)
    batch = _batch(n=14, n_classes=2)
    for alpha in (0.0, 0.5):
        torch.manual_seed(0)
        model = _model(alpha=alpha, domains=())
        total, parts = model.loss(batch, model.forward_batch(batch))
        assert parts["contrastive"] > 0
        assert float(total.detach()) == pytest.approx(float((parts["emotion"] + alpha * parts["contrastive"]).detach()), rel=1e-6)


def test_seq_experts_sizes_default_and_named_roles(caplog):
    model = _model(seq_experts={"default": {"conv": 3, "hidden": 4}, "seq2": {"conv": 2, "hidden": 5, "layers": 2}})
    assert model.experts["seq1"].lstm.hidden_size == 4 and model.experts["seq2"].lstm.num_layers == 2
    with caplog.at_level("WARNING"):
        _model(seq_experts={"default": {"conv": 3, "hidden": 4}, "sq1": {"conv": 2}})
    assert "['sq1'] name no input of this run" in caplog.text
    with pytest.raises(ValueError, match=r"seq_experts: \['vec'\] are vector inputs"):
        _model(seq_experts={"vec": {"conv": 2}})


def test_a_sequence_selector_drives_the_gates_with_its_mean_frame():
    torch.manual_seed(0)
    model = _model(gating="mmoe", selector="seq2").eval()
    batch = _batch(domain=torch.tensor([0, 1] * 4))
    assert model.selector == "seq2" and model.gates.linear.in_features == 4
    x, n = batch.inputs["seq2"], batch.lengths["seq2"]
    mean = torch.stack([x[i, : n[i]].mean(dim=0) for i in range(len(n))])
    torch.testing.assert_close(model._selector_input(batch), mean)
    assert _model(gating="mmoe").selector == "vec"  # default: the first vector role


def test_bad_config_fails_with_the_key_and_choices():
    for over, match in (({"gating": "moe"}, "gating must be one of"), ({"activations": "tanh"}, "activations"),
                        ({"selector": "nope"}, "selector must be one of this run's input roles"), ({"alpha": -1}, "alpha")):
        with pytest.raises(ValueError, match=match):
            _model(**over)


# -- trainer: domains as inputs, end to end ------------------------------------------------


def _two_language_manifest():
    a, b = synth_manifest(n_speakers=3, per_class=6, corpus="a"), synth_manifest(n_speakers=3, per_class=6, corpus="b")
    a["language"], b["language"] = "de", "it"
    return pd.concat([a, b], ignore_index=True)


def _fold_data(manifest, config):
    spec = registry.get("mgnas")
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(config))
    ids = manifest["utt_id"].tolist()
    packed = {"seq1": pack_features(sequence_features(manifest), ids), "seq2": pack_features(sequence_features(manifest, dim=5, seed=1), ids),
              "vec": pack_features(vector_features(manifest), ids)}
    return build_fold_data(packed, table, make_folds(manifest, "loso", seed=0)[0], "global")


def test_evaluation_batches_carry_only_the_declared_aux_inputs():
    m = _two_language_manifest()
    m["gender2"] = m["gender"]
    data = _fold_data(m, {"domain": "language"})
    part = _PartBatches(data.test, data.kinds, torch.device("cpu"), aux_inputs=("domain",))
    b = part.batch(np.arange(4), labels=False)
    assert b.y is None and set(b.aux) == {"domain"} and bool(b.aux_mask["domain"].all())
    plain = _PartBatches(data.test, data.kinds, torch.device("cpu"))
    assert plain.batch(np.arange(4), labels=False).aux == {}


def test_two_language_training_records_gate_weights_per_language():
    spec = registry.get("mgnas")
    cfg = spec.config(overrides={**SMALL, "domain": "language", "gating": "nas", "epochs": 1, "batch_size": 12,
                                 "samples_per_class": 4, "domain_alpha": {"it": 0.015}})
    data = _fold_data(_two_language_manifest(), cfg)
    res = TorchFoldTrainer(spec, cfg, data, seed=0).run()
    again = TorchFoldTrainer(spec, cfg, data, seed=0).run()
    np.testing.assert_array_equal(res.test_logits, again.test_logits)
    rec = json.loads(json.dumps(res.model_record))
    assert rec["domains"] == ["de", "it"] and set(rec["gate_weights"]) == {"train", "validation", "test"}
    for part, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        langs = np.asarray(data.aux_names["domain"])[split.aux["domain"]]
        assert rec["gate_counts"][part] == {d: int((langs == d).sum()) for d in ("de", "it") if (langs == d).any()}
    assert set(rec["nas_gates"]) == {"de", "it"}
    assert set(res.history[0]["loss_parts"]) == {"emotion", "contrastive", "l0"}


def test_nas_closes_the_connections_of_an_uninformative_expert():
    """With the default L0 term the test-time gates of a pure-noise expert reach exactly 0
    while the informative expert's stay open; without it (l0_weight=0) nothing closes."""
    m = _two_language_manifest()
    spec = registry.get("mgnas")
    table_cfg = {"domain": "language"}
    ids = m["utt_id"].tolist()
    packed = {"signal": pack_features(vector_features(m, dim=6, sep=8.0), ids),
              "noise": pack_features(vector_features(m, dim=6, seed=5, sep=0.0), ids)}
    table = make_label_table(m, class_list(m["emotion"]), aux_columns=spec.aux_columns(table_cfg))
    data = build_fold_data(packed, table, make_folds(m, "loso", seed=0)[0], "global")
    closed = {}
    for l0 in (0.0, spec.config()["l0_weight"]):
        cfg = spec.config(overrides={"domain": "language", "gating": "nas", "epochs": 30, "batch_size": 16, "lr": 1e-2,
                                     "nas_lr_scale": 5.0, "samples_per_class": 4, "units": 8, "proj_dim": 6, "dropout": 0.0,
                                     "l0_weight": l0})  # gates' lr 0.05 as the default 30 x 1e-3 (0.03); weights 10x faster
        rec = TorchFoldTrainer(spec, cfg, data, seed=0).run().model_record
        xi = {d: np.array([rec["nas_gates"][d][to] for to in rec["experts"]]) for d in rec["domains"]}  # [to, from]
        closed[l0] = {d: (x == 0) for d, x in xi.items()}
        if l0 > 0:
            assert rec["nas_closed"] == {d: int(c.sum()) for d, c in closed[l0].items()}
            for d, x in xi.items():
                assert (x[:, rec["experts"].index("noise")] == 0).all(), (d, x)  # every connection from noise closed
                assert (x[:, rec["experts"].index("signal")] > 0).any(), (d, x)  # the signal still flows
    assert not any(c.any() for c in closed[0.0].values())


# -- CLI and search space -----------------------------------------------------------------


def test_domain_option_sets_the_domain_key(tmp_path):
    from click.testing import CliRunner

    from serray.cli import main
    from serray.commands._common import run_spec_from_options

    opts = {"workdir": str(tmp_path), "features": "mfb+mfcc+egemaps", "domain": "language"}
    spec = run_spec_from_options("mgnas", opts, announce=False)
    assert spec.resolved_config()["domain"] == "language"
    assert spec.feature_sets() == {"mfb": "mfb", "mfcc": "mfcc", "egemaps": "egemaps"}
    with pytest.raises(ValueError, match="has no domain"):
        run_spec_from_options("dcnn", {"workdir": str(tmp_path), "domain": "language"}, announce=False)
    with pytest.raises(ValueError, match="contradicts"):
        run_spec_from_options("mgnas", {**opts, "assignments": ("domain=corpus",)}, announce=False)
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--domain COLUMN" in help_text


def test_search_space_loads_and_every_choice_builds():
    space = load_search_space("mgnas")
    assert space.model == "mgnas"
    defaults = registry.get("mgnas").config(preset=space.preset)
    names = [p.name for p in space.params] + [p.name for _, ps in space.conditional for p in ps]
    assert set(names) <= set(defaults) | {"lr", "batch_size"}
    issue = {"alpha", "units", "activations", "dropout", "lr", "batch_size", "samples_per_class", "gating"}
    assert issue <= {p.name for p in space.params}  # the issue's list, all searched unconditionally
    assert {p.name for _, ps in space.conditional for p in ps} == {"l0_weight", "nas_lr_scale"}
    gating = next(p for p in space.params if p.name == "gating")
    acts = next(p for p in space.params if p.name == "activations")
    for g in gating.values:
        for a in acts.values:
            model = _model(gating=g, activations=a)
            batch = _batch(domain=torch.tensor([0, 1] * 4))
            model.loss(batch, model.forward_batch(batch))[0].backward()


def test_gate_weight_figure_from_a_run_record(tmp_path):
    from serray.models.mgnas_plots import gate_weights_table, plot_gate_weights

    rec = {"metrics": {"folds": [
        {"model": {"experts": ["seq1", "vec"], "gate_weights": {"test": {"de": [0.2, 0.8], "it": [0.6, 0.4]},
                                                                 "train": {"de": [0.5, 0.5]}}}},
        {"model": {"experts": ["seq1", "vec"], "gate_weights": {"test": {"de": [0.4, 0.6]}}}},
    ]}}
    table = gate_weights_table(rec)
    assert table.loc["de", "seq1"] == pytest.approx(0.3) and table.loc["it", "vec"] == pytest.approx(0.4)
    assert gate_weights_table(rec, "train").loc["de", "vec"] == pytest.approx(0.5)
    out = plot_gate_weights(rec, tmp_path / "gates.png", labels={"seq1": "mfb", "vec": "egemaps"})
    assert out.read_bytes()[:4] == b"\x89PNG"
    old = {"metrics": {"folds": [{"model": {"experts": ["a", "b"], "gate_weights": {"de": {"n": 3, "a": 0.1, "b": 0.9}}}}]}}
    assert gate_weights_table(old, "train").loc["de", "b"] == pytest.approx(0.9)  # records written before the parts
    with pytest.raises(ValueError, match="gating=omoe"):
        gate_weights_table({"metrics": {"folds": [{"model": {"gating": "none", "gate_weights": {}}}]}})


# -- issue 37 (defect 4): the Base arm, the search space without a domain, the small preset,
# -- per-domain alpha, the paper's arms ----------------------------------------------------


class _TwoDomainPart:
    """Training part where domain 0 lacks emotion 2 and domain 1 lacks emotion 0."""

    y = np.array([0, 1, 0, 1, 2, 2])
    aux = {"domain": np.array([0, 0, 0, 1, 1, 1])}


def test_base_arm_never_masks_a_domains_absent_emotions():
    """gating=none (the paper's Base) has one tower that does not know the language, so a
    domain's absent emotions stay predictable there; the gated modes still mask them."""
    torch.manual_seed(0)
    model = _model(n_classes=3, gating="none")
    model.prepare(_TwoDomainPart())
    model.eval()
    batch = _batch(domain=torch.tensor([0] * 4 + [1] * 4))
    logits = model.forward_batch(batch)["logits"].detach()
    assert (logits.abs() < 1e3).all()  # no emotion of either domain pushed to -1e4
    swapped = _batch(domain=torch.tensor([1] * 4 + [0] * 4))
    torch.testing.assert_close(model.forward_batch(swapped)["logits"].detach(), logits)  # the domain changes nothing
    gated = _model(n_classes=3, gating="shared_bottom")
    gated.prepare(_TwoDomainPart())
    out = gated.eval().forward_batch(batch)["logits"].detach()
    assert (out[:4, 2] < -1e3).all() and (out[4:, 0] < -1e3).all()


def test_small_preset_keeps_the_mfcc_experts_own_sizes():
    """The paper's MFCC expert has half the filters and hidden units of the others and 2
    BiLSTM layers; the small preset keeps that shape (it used to drop the mfcc entry)."""
    spec = registry.get("mgnas")
    for preset in (None, "small"):
        cfg = spec.config(preset=preset)
        info = InputInfo((6,), 3, shapes={"mfb": (6,), "mfcc": (4,), "egemaps": (5,)},
                         kinds={"mfb": "sequence", "mfcc": "sequence", "egemaps": "vector"})
        model = spec.build(cfg, info)
        mfb, mfcc = model.experts["mfb"], model.experts["mfcc"]
        assert mfcc.lstm.num_layers == 2 and mfb.lstm.num_layers == 1, preset
        assert 2 * mfcc.lstm.hidden_size == mfb.lstm.hidden_size, preset
        assert 2 * mfcc.convs[0].out_channels == mfb.convs[0].out_channels, preset
    assert spec.config(preset="small")["seq_experts"]["mfcc"]["hidden"] < spec.config()["seq_experts"]["mfcc"]["hidden"]


def test_contrastive_loss_per_sample_sums_to_the_total():
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(15, 4)), requires_grad=True)
    y = torch.tensor([0] * 6 + [1] * 7 + [2] * 2)
    w, b = torch.tensor(2.5, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    per = centroid_contrastive_loss(x, y, w, b, reduction="none")
    assert per.shape == (15,) and (per[13:] == 0).all() and (per[:13] > 0).all()
    assert float(per.sum().detach()) == pytest.approx(float(centroid_contrastive_loss(x.detach(), y, w, b)), rel=1e-12)
    per[:6].sum().backward()
    assert x.grad.abs().sum() > 0
    none_kept = centroid_contrastive_loss(x, torch.tensor([0] * 5 + [1] * 5 + [2] * 5), w, b, reduction="none")
    assert none_kept.shape == (15,) and float(none_kept.detach().abs().sum()) == 0.0
    with pytest.raises(ValueError, match="reduction"):
        centroid_contrastive_loss(x, y, w, b, reduction="mean")


def test_domain_alpha_weighs_each_domains_contrastive_term():
    """Eq. 6 with the paper's per-language alphas: each utterance's term has its domain's
    alpha (``domain_alpha``), domains not named and unknown ones ``alpha``."""
    domain = torch.tensor([0, 1, -1] * 4 + [0, 1])  # 14 utterances, 4 of unknown domain
    batch = _batch(n=14, n_classes=2, domain=domain)
    for gating in ("none", "mmoe"):
        torch.manual_seed(0)
        model = _model(gating=gating, alpha=0.1, domain_alpha={"it": 0.5})
        out = model.forward_batch(batch)
        total, parts = model.loss(batch, out)
        per = model.contrastive(out["embedding"], batch.y, reduction="none")
        weights = torch.tensor([0.1 if d != 1 else 0.5 for d in domain.tolist()])
        expected = parts["emotion"] + (weights * per).sum()
        assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
        assert float(parts["contrastive"].detach()) == pytest.approx(float(per.sum().detach()), rel=1e-6)
        assert float(total.detach()) != pytest.approx(float((parts["emotion"] + 0.1 * parts["contrastive"]).detach()), rel=1e-4)
    torch.manual_seed(0)
    same = _model(alpha=0.1, domain_alpha={"de": 0.1, "it": 0.1})
    total, parts = same.loss(batch, same.forward_batch(batch))
    assert float(total.detach()) == pytest.approx(float((parts["emotion"] + 0.1 * parts["contrastive"]).detach()), rel=1e-6)
    for bad, match in (({"fr": 0.1}, r"domain_alpha: \['fr'\] are not domains of this run; its domains: \['de', 'it'\]"),
                       ({"de": "high"}, "domain_alpha: weights must be numbers >= 0"),
                       ({"de": -0.1}, "domain_alpha: weights must be numbers >= 0"), ([0.1, 0.2], "domain_alpha must map")):
        with pytest.raises(ValueError, match=match):
            _model(domain_alpha=bad)


def test_paper_arms_resolve_to_their_configs():
    """``serray seeds mgnas --variant NAME``: the paper's Table 3 rows and Table 4's ablation."""
    from serray.training.seeds import variant_overrides
    from serray.training.spec import RunSpec

    spec = registry.get("mgnas")
    expected = {"shared_tower": ("none", 0.01), "sb": ("shared_bottom", 0.01), "omoe": ("omoe", 0.01),
                "mmoe": ("mmoe", 0.01), "nas": ("nas", 0.01), "alpha0": ("none", 0.0), "nas_alpha0": ("nas", 0.0)}
    assert set(spec.variants) == set(expected)
    assert "base" not in spec.variants  # seeds' default variant: a plain run keeps its own --set gating=
    run = RunSpec("W", "mgnas", config={"gating": "omoe", "alpha": 0.2, "domain_alpha": {"de": 0.3}})
    for name, (gating, alpha) in expected.items():
        cfg = run.resolved_config(variant_overrides(spec, name, {}))
        assert cfg["gating"] == gating, name
        if alpha == 0.0:  # the ablation drops every contrastive weight, per-domain ones too
            assert cfg["alpha"] == 0.0 and cfg["domain_alpha"] == {}, name
        else:  # the arms differ in gating only
            assert cfg["alpha"] == 0.2 and cfg["domain_alpha"] == {"de": 0.3}, name
        cfg = spec.config(overrides={**SMALL, **spec.variants[name]})
        model = _model(**{k: cfg[k] for k in ("gating", "alpha", "domain_alpha")})
        batch = _batch(n=14, n_classes=2, domain=torch.tensor([0, 1] * 7))
        total, parts = model.loss(batch, model.forward_batch(batch))
        if alpha == 0.0:
            assert float(total.detach()) == pytest.approx(float(parts["emotion"].detach()) + (
                cfg["l0_weight"] * float(parts["l0"].detach()) if gating == "nas" else 0.0), rel=1e-6)
    assert variant_overrides(spec, "mmoe", {"lr": 0.1}) == {"gating": "mmoe", "lr": 0.1}


def test_gated_mode_without_a_domain_warns(caplog):
    with caplog.at_level("WARNING"):
        _model(gating="mmoe", domains=())
    assert "gating=mmoe with one domain ['all']" in caplog.text and "--domain COLUMN" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _model(gating="none", domains=())
        _model(gating="mmoe")
    assert "one domain" not in caplog.text


def test_search_space_searches_gating_only_with_a_domain(tmp_path, caplog):
    """Without a domain the gating mode (and what is conditional on it) stays at the
    config's value, with one log line; with --domain it is searched."""
    from serray.training.spec import RunSpec
    from serray.tune.options import resolve_space

    def space(**config):
        with caplog.at_level("INFO", logger="serray.tune.options"):
            sp = resolve_space(RunSpec(str(tmp_path), "mgnas", config=config), None)[1]
        return {p.name: p for p in sp.params}, sp

    caplog.clear()
    params, sp = space()
    assert params["gating"].type == "fixed" and params["gating"].value == "none"
    assert params["alpha"].type == "loguniform"
    assert "not searched, as the run leaves the key(s) they need unset: gating=none (needs domain: --set domain=VALUE)" in caplog.text
    trial = sp.trial_params(sp.point(registry.get("mgnas").config(preset="small")))
    assert trial["gating"] == "none" and "l0_weight" not in trial
    params, _ = space(gating="nas")  # no domain: gating stays at the run's own value
    assert params["gating"].type == "fixed" and params["gating"].value == "nas"
    caplog.clear()
    params, _ = space(domain="language")
    assert params["gating"].type == "choice" and set(params["gating"].values) >= {"none", "mmoe", "nas"}
    assert "not searched" not in caplog.text
