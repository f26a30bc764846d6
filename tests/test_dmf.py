"""Diverse feature mapping (paper 003): gradient scale, fake-domain remapping, layer weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from serray.models import registry
from serray.models.contract import Batch, InputInfo
from serray.models.dmf import DMF, LayerMix
from serray.protocols import make_folds
from serray.training.data import build_fold_data, class_list, make_label_table, pack_features
from serray.training.trainer import TorchFoldTrainer

from _training_helpers import sequence_features, synth_manifest, vector_features

TINY = {"fe_hidden": [8], "head_hidden": 8, "epochs": 3, "patience": 0, "batch_size": 8, "dropout": 0.0}


def _model(gamma: float, **kw) -> DMF:
    torch.manual_seed(0)
    return DMF(12, 4, 3, gamma=gamma, fe_hidden=[6], head_hidden=5, dropout=0.0, **kw)


def _batch(n: int = 7, width: int = 12) -> Batch:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, width, generator=g)
    dom = torch.tensor([0, 1, 2, 0, 1, 2, 0][:n])
    return Batch({"x": x}, {}, torch.randint(0, 4, (n,), generator=g), aux={"domain": dom}, aux_mask={"domain": dom >= 0})


def _domain_grads(gamma: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients of CE_domain alone on FE and on DC, for one gamma (same weights for all)."""
    model, batch = _model(gamma), _batch()
    out = model.forward_batch(batch)
    F.cross_entropy(out["domain_logits"], batch.aux["domain"]).backward()
    fe = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("fe.")}
    dc = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("dc.")}
    return fe, dc


@pytest.mark.parametrize("gamma", [0.0, 1.0, -1.0, -0.3])
def test_gradient_into_fe_is_scaled_by_gamma_and_dc_gradient_unchanged(gamma):
    fe_ref, dc_ref = _domain_grads(1.0)
    fe, dc = _domain_grads(gamma)
    assert any(g.abs().sum() > 0 for g in fe_ref.values())
    for name in fe_ref:
        torch.testing.assert_close(fe[name], gamma * fe_ref[name])
    for name in dc_ref:
        assert dc_ref[name].abs().sum() > 0
        torch.testing.assert_close(dc[name], dc_ref[name])


def test_loss_weights_domain_term_and_masks_unknown_domains():
    model, batch = _model(1.0, w_domain=0.5), _batch()
    batch.aux_mask["domain"] = torch.tensor([True, True, False, True, False, True, True])
    out = model.forward_batch(batch)
    total, parts = model.loss(batch, out)
    m = batch.aux_mask["domain"]
    want_dom = F.cross_entropy(out["domain_logits"][m], batch.aux["domain"][m])
    torch.testing.assert_close(parts["domain"], want_dom)
    torch.testing.assert_close(total, F.cross_entropy(out["logits"], batch.y) + 0.5 * want_dom)


def test_layer_weights_are_a_softmax_and_receive_gradients():
    model = DMF(12, 4, 3, n_layers=3, fe_hidden=[6], head_hidden=5)
    w = model.mix.weights().detach()
    assert torch.all(w > 0) and float(w.sum()) == pytest.approx(1.0)
    model.mix.logits.data = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(model.mix.weights(), torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0))
    # the mixed input is the weighted sum of the three 4-wide layers
    x = torch.randn(2, 12)
    want = sum(model.mix.weights()[i] * x[:, 4 * i : 4 * i + 4] for i in range(3))
    torch.testing.assert_close(model.mix(x), want)
    batch = _batch()
    loss, _ = model.loss(batch, model.forward_batch(batch))
    loss.backward()
    assert model.mix.logits.grad is not None and model.mix.logits.grad.abs().sum() > 0
    rec = model.fold_record()["layer_weights"]
    assert len(rec) == 3 and sum(rec) == pytest.approx(1.0)


def test_chosen_layer_and_bad_layer_choices():
    mix = LayerMix(3, 2, layer=1)
    assert mix(torch.arange(6.0).view(1, 6)).tolist() == [[2.0, 3.0]]
    assert not list(mix.parameters())
    with pytest.raises(ValueError, match="out of range"):
        LayerMix(3, 2, layer=3)
    with pytest.raises(ValueError, match="n_layers"):
        DMF(10, 4, 2, n_layers=3)


def _fold(manifest, name, config, kind="vector"):
    spec = registry.get(name)
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(config))
    feats = vector_features(manifest) if kind == "vector" else sequence_features(manifest)
    packed = {"x": pack_features(feats, manifest["utt_id"].tolist())}
    fold = make_folds(manifest, "loso", seed=0)[0]
    return build_fold_data(packed, table, fold, "global")


@pytest.fixture(scope="module")
def manifest():
    m = synth_manifest(n_speakers=4, per_class=4)
    m["corpus"] = np.where(m["speaker"].isin(sorted(m["speaker"].unique())[:2]), "c1", "c2")
    m.loc[m.index[::9], "gender"] = None  # unknown: masked out of CE_domain
    return m


def test_trainer_passes_domain_names_to_the_builder(manifest):
    spec = registry.get("dmf")
    cfg = spec.config(overrides={**TINY, "domain": "gender*corpus"})
    data = _fold(manifest, "dmf", cfg)
    seen = {}

    def spy(config, info: InputInfo):
        seen["names"] = info.aux_names.get("domain")
        return spec.build(config, info)

    import dataclasses

    TorchFoldTrainer(dataclasses.replace(spec, build=spy), cfg, data, seed=0)
    assert seen["names"] == data.aux_names["domain"] == ("fxc1", "fxc2", "mxc1", "mxc2")


def test_remapping_freezes_dc_and_uses_the_fixed_label(manifest):
    spec = registry.get("dmf")
    cfg = spec.config(overrides={**TINY, "remap": "mxc2", "stages": "all@2;fe+ec@2", "gamma": 1.0})
    data = _fold(manifest, "dmf", cfg)
    tr = TorchFoldTrainer(spec, cfg, data, seed=0)
    d_star = data.aux_names["domain"].index("mxc2")
    assert tr.model.remap_index == d_star and not tr.model.remapping
    tr.step()
    tr.step()  # stage 1 (true domains) done; stage 2 starts from the best weights
    assert tr._stage == 1 and tr.model.remapping
    assert not any(p.requires_grad for p in tr.model.dc.parameters())
    assert all(p.requires_grad for p in tr.model.fe.parameters()) and all(p.requires_grad for p in tr.model.ec.parameters())
    part = tr._parts["train"]
    batch = part.batch(np.arange(part.n))
    assert not bool((batch.aux["domain"] == d_star).all())  # true labels differ from d*
    target, mask = tr.model.domain_targets(batch)
    assert mask is None and target.tolist() == [d_star] * part.n
    out = tr.model.forward_batch(batch)
    _, parts = tr.model.loss(batch, out)
    torch.testing.assert_close(parts["domain"], F.cross_entropy(out["domain_logits"], target))
    dc_before = {n: p.detach().clone() for n, p in tr.model.dc.named_parameters()}
    fe_before = [p.detach().clone() for p in tr.model.fe.parameters()]
    while not tr.stopped:
        tr.step()
    for n, p in tr.model.dc.named_parameters():
        assert torch.equal(p, dc_before[n])
    assert any(not torch.equal(a, b) for a, b in zip(fe_before, tr.model.fe.parameters()))
    assert tr.history[-1]["stage"] == 1 and "domain" in tr.history[-1]["loss_parts"]


def test_bad_remap_settings_fail_clearly(manifest):
    spec = registry.get("dmf")
    base = {**TINY, "domain": "gender*corpus"}
    data = _fold(manifest, "dmf", spec.config(overrides=base))
    with pytest.raises(ValueError, match=r"remap='nope' is not a domain value.*fxc1"):
        TorchFoldTrainer(spec, spec.config(overrides={**base, "remap": "nope", "stages": "remap"}), data, seed=0)
    with pytest.raises(ValueError, match="needs a second stage"):
        TorchFoldTrainer(spec, spec.config(overrides={**base, "remap": "fxc1"}), data, seed=0)
    with pytest.raises(ValueError, match="trains the domain classifier"):
        tr = TorchFoldTrainer(spec, spec.config(overrides={**base, "remap": "fxc1", "stages": "all@1;all@1"}), data, seed=0)
        tr.step()


def test_vanilla_emotion_path_does_not_depend_on_the_domain_loss(manifest):
    """gamma 0: the emotion logits are those of the same model with the domain weight 0."""
    spec = registry.get("dmf")
    runs = []
    for w in (1.0, 0.0):
        cfg = spec.config(overrides={**TINY, "gamma": 0.0, "w_domain": w, "patience": 0})
        tr = TorchFoldTrainer(spec, cfg, _fold(manifest, "dmf", cfg), seed=3)
        runs.append(tr.run())
    np.testing.assert_allclose(runs[0].test_logits, runs[1].test_logits, rtol=0, atol=1e-6)


def test_sequence_member_pools_valid_frames_only(manifest):
    spec = registry.get("dmf_seq")
    cfg = spec.config(overrides=TINY)
    tr = TorchFoldTrainer(spec, cfg, _fold(manifest, "dmf_seq", cfg, kind="sequence"), seed=0)
    model = tr.model.eval()
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, 100 * torch.ones(1, 3, 8)], dim=1)
    with torch.no_grad():
        a = model(x, torch.tensor([5]))["embedding"]
        b = model(padded, torch.tensor([5]))["embedding"]
    torch.testing.assert_close(a, b)
    res = tr.run()
    assert res.test_logits.shape[1] == len(res.classes) and np.isfinite(res.test_logits).all()


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
    )
    folder = tmp_path_factory.mktemp("tiny_hubert")
    transformers.HubertModel(cfg).save_pretrained(folder)
    return folder


def test_ssl_finetuning_freezes_the_front_end_and_trains_the_top_layers(manifest, tiny_hubert):
    from transformers import AutoModel

    spec = registry.get("dmf_seq")
    cfg = spec.config(overrides={**TINY, "epochs": 2, "ssl_finetune": True, "ssl_model": str(tiny_hubert), "trainable_layers": 1, "max_frames": 400})
    spec_table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(cfg))
    waves = sequence_features(manifest, dim=1, t_range=(400, 900))
    data = build_fold_data({"x": pack_features(waves, manifest["utt_id"].tolist())}, spec_table, make_folds(manifest, "loso", seed=0)[0], "global")
    tr = TorchFoldTrainer(spec, cfg, data, seed=0)
    names = [n for n, _ in tr.model.named_parameters()]
    assert tr.model.parameter_groups()["ssl"] == [n for n in names if n.startswith("ssl.")]
    assert all(n.startswith("ssl.top.0.") for n in tr.model.parameter_groups()["ssl"])
    assert not any("feature_extractor" in n or "pos_conv" in n for n in names)
    ssl = tr.model.ssl.model
    assert ssl.encoder.layers[1] is tr.model.ssl.top[0]
    ref = AutoModel.from_pretrained(tiny_hubert)
    res = tr.run()
    assert np.isfinite(res.test_logits).all()
    trained = dict(ssl.named_parameters())
    for name, p in ref.named_parameters():
        if name.startswith("encoder.layers.1."):
            continue
        assert torch.equal(trained[name], p), name  # conv front-end, projection, layer 0: untouched
        assert not trained[name].requires_grad
    assert any(not torch.equal(trained[n], p) for n, p in ref.named_parameters() if n.startswith("encoder.layers.1."))
    weights = tr.model.fold_record()["layer_weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)


def test_ssl_finetuning_bad_settings(manifest, tiny_hubert):
    spec = registry.get("dmf_seq")
    base = {**TINY, "ssl_finetune": True, "ssl_model": str(tiny_hubert)}
    frames = _fold(manifest, "dmf_seq", spec.config(overrides=base), kind="sequence")
    with pytest.raises(ValueError, match="waveform"):
        TorchFoldTrainer(spec, spec.config(overrides=base), frames, seed=0)
    info = InputInfo((1,), 4, 2)
    with pytest.raises(ValueError, match=r"trainable_layers must be in 0..2"):
        spec.build(spec.config(overrides={**base, "trainable_layers": 3}), info)
    with pytest.raises(ValueError, match="needs ssl_model"):
        spec.build(spec.config(overrides={**base, "ssl_model": ""}), info)


def _sample_space(space, n=40):
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        t = study.ask()
        fixed = space.define_by_run(t)
        out.append({**t.params, **fixed})
        study.tell(t, 0.0)
    return out


@pytest.mark.parametrize("name", ["dmf", "dmf_seq"])
def test_search_space_covers_every_arm_and_every_layer_choice_builds(name, tmp_path):
    """Both members have a space (``serray tune dmf_seq``); it draws vanilla (gamma 0), MTL
    (gamma > 0) and DANN (gamma < 0), and ``--set arm=dann`` tunes DANN's |gamma| alone."""
    from serray.training.spec import RunSpec
    from serray.tune.options import resolve_space

    spec, space, _, defaults = resolve_space(RunSpec(tmp_path, name), None)
    assert {"lr", "arm", "gamma", "w_domain", "layer"} <= set(space.names())
    shape = (12,)
    gammas = []
    for trial in _sample_space(space):
        cfg = spec.config(preset="small", overrides={**trial, "n_layers": 3})
        model = spec.build(cfg, InputInfo(shape, 4, 2))
        gammas.append((trial["arm"], model.gamma))
        assert model.mix.weighted == (trial["layer"] == "weighted")
        assert model.mix.position == (None if trial["layer"] == "weighted" else int(trial["layer"]) % 3)
    assert {arm for arm, _ in gammas} == {"vanilla", "mtl", "dann"}
    assert all((g == 0) if arm == "vanilla" else (0.1 <= abs(g) <= 1.0 and (g > 0) == (arm == "mtl")) for arm, g in gammas)
    run = RunSpec(tmp_path, name, config={"arm": "dann"})
    _, pinned, _, _ = resolve_space(run, None, pinned=("arm",))
    dann = _sample_space(pinned, n=10)
    assert all(t["arm"] == "dann" and 0.1 <= t["gamma"] <= 1.0 for t in dann)
    assert len({t["gamma"] for t in dann}) == 10


def test_named_arms_resolve_to_the_paper_systems(manifest):
    """vanilla / mtl / dann / remap-<d*> as seeds variants (ModelSpec.variants)."""
    from serray.training.seeds import variant_overrides

    for name in ("dmf", "dmf_seq"):
        spec = registry.get(name)
        info = InputInfo((12,), 4, 4, aux_names={"domain": ("fxc1", "fxc2", "mxc1", "mxc2")})

        def built(variant, **over):
            cfg = spec.config(overrides={**TINY, **variant_overrides(spec, variant, over)})
            return cfg, spec.build(cfg, info)

        assert [built(v)[1].gamma for v in ("vanilla", "mtl", "dann")] == [0.0, 1.0, -1.0]
        assert [built(v, gamma=0.4)[1].gamma for v in ("vanilla", "mtl", "dann")] == [0.0, 0.4, -0.4]  # a tuned |gamma| kept
        cfg, model = built("remap-mxc1")
        assert cfg["stages"] == "remap" and cfg["remap"] == "mxc1" and model.gamma == 1.0 and model.remap_index == 2
        assert list(spec.variants) == ["vanilla", "mtl", "dann", "remap-<domain>"]
        assert "remap-" not in spec.variants and "mine" not in spec.variants
    with pytest.raises(ValueError, match=r"remap='xx' is not a domain value"):
        built("remap-xx")
    with pytest.raises(ValueError, match=r"arm must be one of \['dann', 'mtl', 'vanilla'\]"):
        spec.build(spec.config(overrides={**TINY, "arm": "adversarial"}), info)


def test_stage_selection_last_keeps_weights_of_the_last_stage(manifest):
    """A second stage that makes validation worse (lr x 100): 'all' keeps a first-stage
    epoch, 'last' (the dmf default) one of the second stage."""
    spec = registry.get("dmf")
    assert spec.config()["stage_selection"] == "last"
    over = {**TINY, "gamma": 1.0, "remap": "fxc1", "stages": "all@6;fe+ec@2*100", "patience": 0, "early_stop": "loss", "lr": 1e-2}
    best = {}
    for sel in ("all", "last"):
        cfg = spec.config(overrides={**over, "stage_selection": sel})
        res = TorchFoldTrainer(spec, cfg, _fold(manifest, "dmf", cfg), seed=0).run()
        assert res.epochs == 8
        best[sel] = res.best_epoch
    assert best["all"] <= 6 < best["last"]
    with pytest.raises(ValueError, match="stage_selection must be 'all' or 'last'"):
        TorchFoldTrainer(spec, spec.config(overrides={**over, "stage_selection": "first"}), _fold(manifest, "dmf", cfg), seed=0)


@pytest.fixture(scope="module", params=["group", "layer"])
def tiny_ssl(request, tmp_path_factory):
    """A tiny random HuBERT with a group-norm (base-like) or layer-norm (large-like) front-end."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        feat_extract_norm=request.param, do_stable_layer_norm=request.param == "layer", conv_bias=request.param == "layer",
    )
    folder = tmp_path_factory.mktemp(f"tiny_hubert_{request.param}")
    transformers.HubertModel(cfg).save_pretrained(folder)
    return folder


def test_ssl_logits_of_an_utterance_do_not_depend_on_its_batch(tiny_ssl):
    """The same utterance alone and zero-padded in a batch with longer ones: the same logits."""
    spec = registry.get("dmf_seq")
    cfg = spec.config(overrides={**TINY, "ssl_finetune": True, "ssl_model": str(tiny_ssl), "trainable_layers": 1})
    torch.manual_seed(0)
    model = spec.build(cfg, InputInfo((1,), 4, 2)).eval()
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([700, 1200, 700, 950])
    wave = torch.zeros(4, 1200, 1)
    for i, n in enumerate(lengths.tolist()):
        wave[i, :n, 0] = torch.randn(n, generator=g)
    with torch.no_grad():
        batched = model(wave, lengths)["logits"]
        alone = torch.cat([model(wave[i : i + 1, :n], lengths[i : i + 1])["logits"] for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def _wave_fold(manifest, cfg):
    spec = registry.get("dmf_seq")
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(cfg))
    waves = sequence_features(manifest, dim=1, t_range=(400, 900))
    return build_fold_data({"x": pack_features(waves, manifest["utt_id"].tolist())}, table, make_folds(manifest, "loso", seed=0)[0], "global")


def test_remapping_stage_fine_tunes_the_ssl_model_and_keeps_dc_frozen(manifest, tiny_hubert):
    """stages=remap with ssl_finetune: the paper's FE (the SSL model) is remapped in step 2."""
    spec = registry.get("dmf_seq")
    cfg = spec.config(overrides={**TINY, "ssl_finetune": True, "ssl_model": str(tiny_hubert), "trainable_layers": 1,
                                 "remap": "fxc1", "stages": "remap", "epochs": 1, "max_frames": 400})
    tr = TorchFoldTrainer(spec, cfg, _wave_fold(manifest, cfg), seed=0)
    tr.step()  # stage 1 (MTL, true domains)
    assert tr._stage == 1 and tr.model.remapping
    ssl = [p for n, p in tr.model.named_parameters() if n.startswith("ssl.")]
    assert ssl and all(p.requires_grad for p in ssl)
    assert not any(p.requires_grad for p in tr.model.dc.parameters())
    before = [p.detach().clone() for p in ssl]
    dc_before = [p.detach().clone() for p in tr.model.dc.parameters()]
    tr.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, ssl))
    assert all(torch.equal(a, b) for a, b in zip(dc_before, tr.model.dc.parameters()))


def test_ssl_layers_train_at_their_own_lr_factor(manifest, tiny_hubert):
    spec = registry.get("dmf_seq")
    assert spec.config()["ssl_lr_scale"] == 0.01
    cfg = spec.config(overrides={**TINY, "ssl_finetune": True, "ssl_model": str(tiny_hubert), "trainable_layers": 1,
                                 "remap": "fxc1", "stages": "remap", "epochs": 1, "max_frames": 400, "lr": 2e-3, "ssl_lr_scale": 0.05})
    tr = TorchFoldTrainer(spec, cfg, _wave_fold(manifest, cfg), seed=0)
    ssl_ids = {id(p) for n, p in tr.model.named_parameters() if n.startswith("ssl.")}

    def lrs() -> dict[bool, float]:
        groups = tr.optimizer.param_groups
        assert all(len({id(p) in ssl_ids for p in g["params"]}) == 1 for g in groups)  # SSL and the rest never share a group
        return {id(g["params"][0]) in ssl_ids: g["lr"] for g in groups}

    assert lrs() == pytest.approx({True: 2e-3 * 0.05, False: 2e-3})
    tr.step()  # the remapping stage: lr x 0.1 for both
    assert lrs() == pytest.approx({True: 2e-4 * 0.05, False: 2e-4})
    n_trainable = sum(1 for p in tr.model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in tr.optimizer.param_groups) == n_trainable
    with pytest.raises(ValueError, match="ssl_lr_scale must be > 0"):
        spec.build(spec.config(overrides={**cfg, "ssl_lr_scale": 0.0, "remap": ""}), InputInfo((1,), 4, 2))


def test_models_without_lr_scales_get_one_optimizer_group(manifest):
    spec = registry.get("dmf")
    cfg = spec.config(overrides=TINY)
    tr = TorchFoldTrainer(spec, cfg, _fold(manifest, "dmf", cfg), seed=0)
    (group,) = tr.optimizer.param_groups
    assert group["lr"] == cfg["lr"] and len(group["params"]) == len(list(tr.model.parameters()))


def test_a_layer_stack_read_as_one_layer_is_refused_before_training(manifest):
    """ssl with layer=all (L layers concatenated) and n_layers=1 used to feed FE the L*H
    concatenation silently; the run's model check (train, seeds, tune) now refuses it."""
    from serray.features.cache import FeatureSet
    from serray.training.data import TrainingInputs
    from serray.training.trainer import check_stage_plans

    spec = registry.get("dmf")
    ids = manifest["utt_id"].tolist()
    stack = FeatureSet("ssl", "vector", ids, np.random.default_rng(0).normal(size=(len(ids), 12)).astype(np.float32), [], (12,), layers=3)
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(spec.config()))
    inputs = TrainingInputs(pack_features(stack, ids), table)
    assert inputs.packed["x"].layers == 3
    for n_layers in (1, 2):
        with pytest.raises(ValueError, match=rf"concatenates 3 SSL layers .* but n_layers={n_layers}; set --set n_layers=3"):
            check_stage_plans(spec, spec.config(overrides={**TINY, "n_layers": n_layers}), inputs, ["all"])
    check_stage_plans(spec, spec.config(overrides={**TINY, "n_layers": 3}), inputs, ["all"])
    one = TrainingInputs(pack_features(FeatureSet("ssl", "vector", ids, stack.data, [], (12,)), ids), table)
    check_stage_plans(spec, spec.config(overrides=TINY), one, ["all"])  # one layer of width 12
