"""ADARL model family (paper 004): Table 1 shapes, attention, losses, variants, registry, search space."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from serray.models import registry
from serray.models.adarl import (
    ADARL,
    CenterLoss,
    DomainAwareEmbedding,
    average_segments,
    grad_reverse,
)
from serray.models.contract import Batch, InputInfo


def _loss(model, out, y, d):
    """The model's total loss for emotion labels ``y`` and domains ``d`` (``None``: no domain)."""
    aux = {} if d is None else {"domain": d}
    mask = {} if d is None else {"domain": torch.ones_like(d, dtype=torch.bool)}
    return model.loss(Batch({}, {}, y, aux=aux, aux_mask=mask), out)[0]

SEARCH_SPACE = Path(__file__).resolve().parents[1] / "serray" / "search_spaces" / "adarl.yaml"
PAPER_SHAPE = (2, 400, 300)
# A small input for behaviour tests: 64 x 48 with pools 2,2,2,2 gives 16 ch x 4 rows x 3 frames.
SMALL_SHAPE = (2, 64, 48)
SMALL = {"pool_sizes": [2, 2, 2, 2], "conv_channels": [4, 4, 4, 8], "embedding_dim": 16, "dropout": 0.0}


def _model(variant: str = "attention", shape=SMALL_SHAPE, n_classes: int = 4, **overrides) -> ADARL:
    spec = registry.get("adarl")
    cfg = spec.config(overrides={**(SMALL if shape == SMALL_SHAPE else {}), "variant": variant, **overrides})
    return spec.build(cfg, InputInfo(shape, n_classes=n_classes, n_domains=2))


def _batch(n: int = 8, shape=SMALL_SHAPE, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g)
    y = torch.arange(n) % 4
    d = (torch.arange(n) // 2) % 2
    return x, y, d


def test_table1_shapes_for_paper_input():
    torch.manual_seed(0)
    model = _model(shape=PAPER_SHAPE).eval()
    seen: dict[str, list[tuple[int, ...]]] = {"emotion": [], "domain": []}
    for name, enc in (("emotion", model.emotion_encoder), ("domain", model.domain_encoder)):
        for layer in enc.layers:
            layer.register_forward_hook(lambda _m, _i, o, name=name: seen[name].append(tuple(o.shape[1:])))
    with torch.no_grad():
        out = model(torch.randn(2, *PAPER_SHAPE))
    expected = [(32, 200, 150), (32, 100, 75), (32, 50, 37), (64, 8, 6)]
    assert seen["emotion"] == expected
    assert seen["domain"] == expected
    assert model.feature_shape == (64, 8, 6)
    # Table 1 layer by layer: per-branch convolutions (C_in, 16/16/16/32, 3x3), pools 2,2,2,6
    for layer, c_in, c_out, pool in zip(model.emotion_encoder.layers, (2, 32, 32, 32), (16, 16, 16, 32), (2, 2, 2, 6)):
        assert (layer.branch1.in_channels, layer.branch1.out_channels) == (c_in, c_out)
        assert layer.branch1.kernel_size == (3, 3)
        assert layer.branch2.out_channels == c_out
        assert layer.pool.kernel_size == (pool, pool)
    head = model.domain_head
    assert (head.fc1.in_features, head.fc1.out_features) == (3072, 64)  # FC(3072, 64)
    assert (head.fc2.in_features, head.fc2.out_features) == (64, 2)  # FC(64, 2)
    assert tuple(model.cfc.weight.shape) == (64, 8)  # CFC 64 x FC(8, 1)
    assert (model.emotion_head.fc1.in_features, model.emotion_head.fc1.out_features) == (64, 64)
    assert (model.emotion_head.fc2.in_features, model.emotion_head.fc2.out_features) == (64, 4)
    att = model.attention
    assert (att.fc1.in_features, att.fc1.out_features, att.fc2.out_features) == (8, 4, 8)  # FC(8,4), FC(4,8)
    assert out["logits"].shape == (2, 4)
    assert out["domain_logits"].shape == (2, 2)
    assert out["embedding"].shape == (2, 64)
    assert out["attention"].shape == (2, 8)


def test_attention_weights_scale_frequency_rows_not_channels():
    torch.manual_seed(0)
    model = _model().eval()
    captured = {}
    model.embed.register_forward_hook(lambda _m, inp, out: captured.update(maps=inp[0], w=inp[1], out=out))
    x, _, _ = _batch(4)
    with torch.no_grad():
        out = model(x)
    att = out["attention"]
    assert att.shape == (4, model.feature_shape[1])
    assert bool(((att > 0) & (att < 1)).all())
    assert torch.equal(captured["w"], att)
    maps, emb = captured["maps"], captured["out"]
    torch.testing.assert_close(emb, maps * att[:, None, :, None])
    # one factor per (sample, frequency row), shared by every channel and frame; rows differ
    assert maps.shape[1] != maps.shape[2]  # channels and rows are distinguishable
    mask = maps.abs() > 1e-6
    per_row = att[:, None, :, None].expand_as(maps)
    torch.testing.assert_close((emb / maps)[mask], per_row[mask])
    assert float(att.std(dim=1).max()) > 0


def test_domain_aware_embedding_uses_one_weight_per_row():
    maps = torch.ones(1, 3, 2, 5)
    out = DomainAwareEmbedding()(maps, torch.tensor([[0.25, 0.75]]))
    assert torch.equal(out[0, :, 0], torch.full((3, 5), 0.25))
    assert torch.equal(out[0, :, 1], torch.full((3, 5), 0.75))
    with pytest.raises(ValueError, match="weights must be"):
        DomainAwareEmbedding()(maps, torch.ones(1, 3))


def test_g1_zero_sends_no_gradient_to_domain_classifier():
    torch.manual_seed(0)
    x, y, d = _batch()
    model = _model(g1=0.0).train()
    _loss(model, model(x), y, d).backward()
    assert all(p.grad is None for p in model.domain_head.parameters())
    # the emotion loss still reaches the domain encoder through the attention weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.domain_encoder.parameters())
    assert all(p.grad is not None for p in model.emotion_encoder.parameters())

    with_g1 = _model(g1=1.0).train()
    _loss(with_g1, with_g1(x), y, d).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in with_g1.domain_head.fc1.parameters())


def test_emotion_only_has_no_domain_pathway_and_needs_no_domain():
    torch.manual_seed(0)
    x, y, _ = _batch()
    model = _model("emotion_only").train()
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("domain_", "attention")) for n in names)
    out = model(x)
    assert set(out) == {"logits", "embedding", "features"}
    loss = _loss(model, out, y, None)
    loss.backward()
    assert math.isfinite(loss.item())
    for variant in ("attention", "adversarial"):
        other = _model(variant)
        with pytest.raises(ValueError, match="needs domain labels"):
            _loss(other, other(x), y, None)


def test_center_loss_moves_centres_toward_class_means():
    torch.manual_seed(0)
    means = torch.tensor([[3.0, 0.0, 0.0], [0.0, -3.0, 1.0]])
    y = torch.tensor([0, 1] * 16)
    feats = means[y] + 0.1 * torch.randn(32, 3)
    crit = CenterLoss(2, 3)
    opt = torch.optim.SGD(crit.parameters(), lr=0.2)
    before = (crit.centers.detach() - means).norm(dim=1)
    for _ in range(60):
        opt.zero_grad()
        crit(feats, y).backward()
        opt.step()
    after = (crit.centers.detach() - means).norm(dim=1)
    assert bool((after < 0.1 * before).all())
    torch.testing.assert_close(crit.centers.detach(), torch.stack([feats[y == k].mean(0) for k in (0, 1)]), atol=1e-3, rtol=0)


def test_center_lr_scale_scales_centre_gradient_only():
    feats = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    grads = []
    for scale in (1.0, 3.0):
        torch.manual_seed(0)
        crit = CenterLoss(3, 4, lr_scale=scale)
        f = feats.clone().requires_grad_(True)
        crit(f, y).backward()
        grads.append((crit.centers.grad.clone(), f.grad.clone()))
    torch.testing.assert_close(grads[1][0], 3.0 * grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])


@pytest.mark.parametrize("feature", ["pre_bn", "post_bn"])
def test_embedding_is_the_center_loss_feature(feature):
    torch.manual_seed(0)
    model = _model(center_feature=feature).train()
    seen = {}
    model.emotion_head.fc1.register_forward_hook(lambda _m, _i, o: seen.update(fc1=o))
    model.emotion_head.bn.register_forward_hook(lambda _m, _i, o: seen.update(bn=o))
    x, y, d = _batch()
    out = model(x)
    expected = F.relu(seen["fc1"]) if feature == "pre_bn" else seen["bn"]
    torch.testing.assert_close(out["embedding"], expected)
    loss_all = _loss(model, out, y, d)
    model.g3 = 0.0
    loss_ce = _loss(model, out, y, d)
    centers = model.center_loss.centers
    torch.testing.assert_close(loss_all - loss_ce, 0.5 * (expected - centers[y]).pow(2).sum(1).mean())


def test_model_centres_are_trained_by_the_model_optimiser():
    torch.manual_seed(0)
    x, y, d = _batch(16)
    model = _model(g1=1.0, g3=1.0)
    assert any(p is model.center_loss.centers for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = model.center_loss.centers.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        _loss(model, model(x), y, d).backward()
        opt.step()
    assert not torch.equal(start, model.center_loss.centers.detach())


def test_average_segments_one_prediction_per_utterance():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 5.0], [3.0, 0.0, 1.0]])
    utt = torch.tensor([0, 0, 1, 2, 2])
    out = average_segments(logits, utt)
    assert out.shape == (3, 3)
    probs = logits.softmax(1)
    expected = torch.stack([probs[:2].mean(0), probs[2], probs[3:].mean(0)])
    torch.testing.assert_close(out.softmax(1), expected)
    torch.testing.assert_close(out.exp(), expected)
    torch.testing.assert_close(average_segments(probs, utt, inputs="probs"), out)
    # segments of an utterance need not be contiguous
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(average_segments(logits[perm], utt[perm]), out)
    with pytest.raises(ValueError, match="without segments"):
        average_segments(logits, torch.tensor([0, 0, 2, 3, 3]))
    with pytest.raises(ValueError, match="one index per segment"):
        average_segments(logits, utt[:3])


def test_grad_reverse_negates_and_scales_gradient():
    x = torch.randn(5, requires_grad=True)
    (grad_reverse(x, 0.3) * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(5.0))


def test_adversarial_variant_reverses_domain_gradient_into_shared_encoder():
    torch.manual_seed(0)
    x, y, d = _batch()
    lam = 0.5
    model = _model("adversarial", g1=1.0, g2=0.0, g3=0.0, grl_lambda=lam).train()
    assert model.domain_encoder is None and model.attention is None
    _loss(model, model(x), y, d).backward()
    reversed_grads = [p.grad.clone() for p in model.emotion_encoder.parameters()]
    head_grads = [p.grad.clone() for p in model.domain_head.parameters()]
    model.zero_grad()
    # reference: the same domain loss without the reversal layer
    maps = model.emotion_encoder(model.input_pool(x))
    logits = model.domain_head(maps.flatten(1))[0]
    F.cross_entropy(logits, d).backward()
    for rev, p in zip(reversed_grads, model.emotion_encoder.parameters()):
        torch.testing.assert_close(rev, -lam * p.grad)
    assert any(float(g.abs().sum()) > 0 for g in reversed_grads)
    # the domain classifier itself is trained normally (no reversal)
    for g, p in zip(head_grads, model.domain_head.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_bad_arguments_raise_early():
    spec = registry.get("adarl")
    with pytest.raises(ValueError, match="variant"):
        spec.build(spec.config(overrides={"variant": "nope"}), InputInfo(PAPER_SHAPE, 4, 2))
    with pytest.raises(ValueError, match="domain classes"):
        spec.build(spec.config(), InputInfo(PAPER_SHAPE, 4, 0))
    with pytest.raises(ValueError, match="too small"):
        spec.build(spec.config(), InputInfo((2, 40, 300), 4, 2))
    with pytest.raises(ValueError, match=r"\[batch, channels, freq, time\]"):
        _model()(torch.randn(2, 64, 48))
    # the pathway-free network needs no domain classes
    assert spec.build(spec.config(overrides={"variant": "emotion_only"}), InputInfo(PAPER_SHAPE, 4, 0)).domain_head is None
    # the old name of the pathway-free variant points at both of its possible meanings
    with pytest.raises(ValueError, match="g1=0.*emotion_only"):
        spec.build(spec.config(overrides={"variant": "backbone"}), InputInfo(PAPER_SHAPE, 4, 2))


def test_registry_spec_and_reduced_preset_build_working_model():
    spec = registry.get("adarl")
    assert spec.name == "adarl" and spec.backend == "torch" and spec.input_kind == "segments"
    assert spec.default_features == ("spectrogram",)
    assert spec.domain_column == "gender"
    assert set(spec.presets["reduced"]) <= set(spec.default_config)
    cfg = spec.config()
    assert (cfg["optimizer"], cfg["lr"], cfg["lr_decay"], cfg["weight_decay"]) == ("sgd", 0.2, 0.7, 4e-5)
    assert (cfg["batch_size"], cfg["epochs"], cfg["g1"], cfg["g2"], cfg["g3"]) == (32, 50, 1.0, 1.0, 0.5)
    # Table 1: (3, 3) kernels in both branches of every layer
    assert (cfg["kernel_size_first_branch"], cfg["kernel_sizes_second_branch"]) == (3, 3)
    assert cfg["domain"] == "gender"
    reduced = spec.config(preset="reduced")
    assert reduced["epochs"] < cfg["epochs"]
    torch.manual_seed(0)
    model = spec.build(reduced, InputInfo(PAPER_SHAPE, n_classes=7, n_domains=2)).train()
    x = torch.randn(4, *PAPER_SHAPE, dtype=torch.float16)  # the feature cache stores float16
    y, d = torch.tensor([0, 3, 6, 1]), torch.tensor([0, 1, 0, 1])
    out = model(x)
    assert out["logits"].shape == (4, 7) and out["attention"].shape == (4, model.feature_shape[1])
    loss = _loss(model, out, y, d)
    loss.backward()
    assert math.isfinite(loss.item())
    paper = spec.build(cfg, InputInfo(PAPER_SHAPE, 7, 2))
    n_reduced = sum(p.numel() for p in model.parameters())
    assert n_reduced < sum(p.numel() for p in paper.parameters())


def test_search_space_parses_and_names_config_keys():
    space = yaml.safe_load(SEARCH_SPACE.read_text())
    spec = registry.get(space["model"])
    assert spec.name == "adarl"
    defaults = spec.config(preset=space.get("preset"))
    blocks = [space["params"]] + [c["params"] for c in space.get("conditional", [])]
    for cond in space.get("conditional", []):
        for key, values in cond["when"].items():
            assert key in space["params"] and space["params"][key]["type"] == "choice"
            assert set(values) <= set(space["params"][key]["values"])
    torch.manual_seed(0)
    x, y, d = _batch(4)
    for block in blocks:
        for key, dist in block.items():
            assert key in defaults, f"{SEARCH_SPACE.name}: {key!r} is not an adarl config key"
            kind = dist["type"]
            assert kind in ("loguniform", "uniform", "int", "choice", "fixed")
            if kind in ("loguniform", "uniform", "int"):
                assert dist["low"] < dist["high"]
                assert kind != "loguniform" or dist["low"] > 0
                values = [dist["low"], dist["high"]]
            elif kind == "choice":
                values = list(dist["values"])
                assert values
            else:
                values = [dist["value"]]
            # every model-side value builds a model that trains one step
            if key in ("kernel_sizes_second_branch", "dropout", "g1", "g3", "grl_lambda", "center_feature"):
                for v in values:
                    model = _model(**{key: v})
                    _loss(model, model(x), y, d).backward()


def test_table1_kernels_by_default_and_the_texts_reading_one_set_away():
    default = _model()
    assert all(layer.branch2.kernel_size == (3, 3) for layer in default.emotion_encoder.layers)
    five = _model(kernel_sizes_second_branch=5)
    assert all(layer.branch1.kernel_size == (3, 3) and layer.branch2.kernel_size == (5, 5)
               for enc in (five.emotion_encoder, five.domain_encoder) for layer in enc.layers)


def test_table3_arms_are_named_variants_of_the_spec():
    from serray.training.seeds import parse_variant, variant_overrides

    spec = registry.get("adarl")
    name, explicit = parse_variant("backbone:g1=0")
    over = variant_overrides(spec, name, explicit)
    assert over == {"variant": "attention", "g1": 0}
    # the paper's backbone keeps the domain pathway and the attention; only L_D is off
    model = _model(**over)
    assert model.domain_encoder is not None and model.attention is not None
    x, y, d = _batch()
    total, parts = model.loss(Batch({}, {}, y), model(x))  # no domain labels needed at g1 = 0
    assert set(parts) == {"emotion", "center"} and math.isfinite(total.item())
    assert variant_overrides(spec, "adversarial", {})["variant"] == "adversarial"
    assert variant_overrides(spec, "adarl", {"lr": 0.1}) == {"variant": "attention", "lr": 0.1}
    for arm in spec.variants.values():  # every arm builds
        _model(**arm)


def test_search_space_tunes_the_adarl_arm_only():
    space = yaml.safe_load(SEARCH_SPACE.read_text())
    keys = set(space["params"]) | {k for c in space.get("conditional", []) for k in c["params"]}
    assert "variant" not in keys and "grl_lambda" not in keys
    assert registry.get("adarl").config(preset=space["preset"])["variant"] == "attention"


def test_fold_record_has_domain_centre_distances_of_the_training_part():
    from types import SimpleNamespace

    from serray.models.adarl import domain_centre_distances

    # two classes; domain 1 sits 3 units from domain 0 in class 0 and 1 unit in class 1
    feats = np.array([[0.0, 0.0], [0.0, 2.0], [3.0, 0.0], [3.0, 2.0], [10.0, 0.0], [11.0, 0.0]])
    y, dom = np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 0, 1])
    out = domain_centre_distances(feats, y, dom, 3)
    assert out["l2"][:2] == pytest.approx([3.0, 1.0]) and math.isnan(out["l2"][2])
    assert out["relative"][0] == pytest.approx(3.0)  # spread: every sample 1 from its centre
    assert domain_centre_distances(feats, y, np.zeros(6, dtype=int), 2) is None

    # the hooks: two segments per utterance, utterance features are the segment means
    torch.manual_seed(0)
    model = _model().eval()
    model.prepare(SimpleNamespace(domain=np.array([0, 1, 0, 1, -1, 0]), y=np.array([0, 0, 1, 1, 1, 2])))
    x = torch.randn(12, *SMALL_SHAPE)
    owner = torch.arange(12) // 2
    with torch.no_grad():
        outputs = model(x)
    batch = Batch({}, {}, torch.tensor([0, 0, 1, 1, 1, 2]), owner=owner, n_utterances=6)
    model.after_training(batch, outputs)
    rec = model.fold_record()
    f = outputs["features"].view(6, 2, -1).mean(dim=1).numpy()
    assert rec["domain_centre_distance"]["l2"][0] == pytest.approx(float(np.linalg.norm(f[0] - f[1])), rel=1e-5)
    assert rec["domain_centre_distance"]["l2"][1] == pytest.approx(float(np.linalg.norm(f[2] - f[3])), rel=1e-5)
    assert math.isnan(rec["domain_centre_distance"]["l2"][2])  # class 2 has one domain only
    # the report names the columns by the run's classes
    from serray.report.model_records import collect, records_of_run

    run = {"classes": ["neutral", "happy", "sad", "angry"], "model_records": {"0": [{"fold": 0, **rec}]}}
    table = collect(records_of_run(run)).matrix_mean("domain_centre_distance")
    assert list(table.columns) == ["neutral", "happy", "sad", "angry"] and list(table.index) == ["l2", "relative"]


def test_attention_hidden_units_start_alive_where_torch_init_leaves_them_dead():
    """The attention reads a mean of non-negative maps, nearly the same for every utterance:
    with PyTorch's default bias some seeds build a reduced-preset model (2 hidden units)
    whose hidden units are all <= 0 for every input, hence constant weights for ever.
    The default positive bias (``attention_fc1_bias``) keeps every unit alive at start."""
    spec = registry.get("adarl")
    reduced = spec.config(preset="reduced")
    g = torch.Generator().manual_seed(0)
    x = torch.rand((16, *PAPER_SHAPE), generator=g)  # non-negative, like z-scored log-spectra shifted
    all_dead = {}
    for bias in (None, 1.0):
        all_dead[bias] = 0
        for seed in range(12):
            torch.manual_seed(seed)
            model = spec.build({**reduced, "attention_fc1_bias": bias}, InputInfo(PAPER_SHAPE, 4, 2)).eval()
            with torch.no_grad():
                out = model(x)
            n_hidden = out["attention_hidden"].shape[1]
            dead = int((out["attention_hidden"] <= 0).all(dim=0).sum())
            all_dead[bias] += dead == n_hidden
            if bias is not None:
                assert dead == 0, f"seed {seed}: {dead} of {n_hidden} attention units dead at initialisation"
    assert all_dead[None] > 0  # the failure the default prevents happens with torch's init


def test_fold_record_reports_attention_spread_and_dead_units(caplog):
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = _model().eval()
    model.prepare(SimpleNamespace(domain=np.array([0, 1, 0, 1]), y=np.array([0, 0, 1, 1])))
    x = torch.randn(4, *SMALL_SHAPE)
    with torch.no_grad():
        outputs = model(x)
    model.after_training(Batch({}, {}, torch.tensor([0, 0, 1, 1])), outputs)
    att = model.fold_record()["attention"]
    assert len(att["weights_mean"]) == len(att["weights_std"]) == model.feature_shape[1]
    assert att["dead_units"] == 0 and att["hidden_units"] == model.attention.fc1.out_features
    assert max(att["weights_std"]) > 0  # the weights vary between utterances
    with torch.no_grad():  # kill every hidden unit: constant weights, and a warning says so
        model.attention.fc1.bias.fill_(-1e3)
        outputs = model(x)
    with caplog.at_level("WARNING", logger="serray.models.adarl"):
        model.after_training(Batch({}, {}, torch.tensor([0, 0, 1, 1])), outputs)
    att = model.fold_record()["attention"]
    assert att["dead_units"] == att["hidden_units"] and max(att["weights_std"]) == 0
    assert "does not reach the emotion pathway" in caplog.text
