"""NHNN (paper 000): groups fitted on training vectors only, pruning, posterior-weighted
heads (eq. 7-10), frozen shared layers in the group stage, per-group selection, record."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import serray.models.nhnn as nhnn_module
from serray.models import registry
from serray.models.baselines import DCNN
from serray.models.nhnn import mixture_log_probs
from serray.models.nhnn_groups import fit_groups
from serray.protocols import make_folds
from serray.training.data import build_fold_data, class_list, make_label_table, pack_features
from serray.training.trainer import TorchFoldTrainer

from _training_helpers import FakeFeatureSet, sequence_features, synth_manifest

TINY = {"channels": 8, "hidden": 8, "max_components": 4, "covariance": "diag", "dp_max_iter": 200, "epochs": 3, "patience": 0}


@pytest.fixture(scope="module")
def manifest():
    m = synth_manifest(n_speakers=6, per_class=5)
    m.loc[m.index[::9], "gender"] = None  # unknown genders are left out of the record's counts
    return m


def _cluster_features(manifest, seed=0, shift=4.0):
    """Two well separated clouds by speaker parity (like two voice groups)."""
    rng = np.random.default_rng(seed)
    spk = manifest["speaker"].str.extract(r"s(\d+)$")[0].astype(int).to_numpy()
    x = rng.normal(size=(len(manifest), 6)) + np.where(spk % 2 == 0, shift, -shift)[:, None]
    return FakeFeatureSet("vector", manifest["utt_id"].tolist(), x.astype(np.float32))


def _fold(manifest, cluster=None, fold_index=0):
    spec = registry.get("nhnn")
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(spec.config()))
    ids = manifest["utt_id"].tolist()
    packed = {"x": pack_features(sequence_features(manifest), ids), "cluster": pack_features(cluster or _cluster_features(manifest), ids)}
    fold = make_folds(manifest, "loso", seed=0)[fold_index]
    return build_fold_data(packed, table, fold, "global"), fold


def _config(**extra):
    return registry.get("nhnn").config(overrides={**TINY, **extra})


def _run_to_group_stage(trainer):
    while trainer._stage == 0 and not trainer.stopped:
        trainer.step()
    assert trainer._stage == 1 and trainer.model.grouped


def test_mixture_log_probs_by_hand():
    head_logits = torch.log(torch.tensor([[[0.2, 0.8], [0.6, 0.4]]]))  # two groups, two classes
    post = torch.tensor([[0.25, 0.75]])
    expected = [0.25 * 0.2 + 0.75 * 0.6, 0.25 * 0.8 + 0.75 * 0.4]
    assert mixture_log_probs(head_logits, post).exp()[0].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("freeze", ["fc", "fc_conv"])
def test_prediction_is_the_posterior_weighted_sum_of_head_softmaxes(manifest, freeze):
    data, _ = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(freeze=freeze), data, seed=0)
    _run_to_group_stage(tr)
    tr.step()  # the heads now differ from each other
    model = tr.model.eval()
    assert model.groups.n_groups == 2
    part = tr._part(data.test)
    batch = part.batch(np.arange(part.n), labels=False)
    with torch.no_grad():
        got = model.utterance_logits(part.whole(), model.forward_batch(batch)).exp().numpy()
    # by hand: eq. 8 over the survivors (weight x Gaussian density of the fitted diagonal mixture) ...
    from scipy.stats import multivariate_normal

    g = model.groups
    xs = (data.test.inputs["cluster"].data - g.mean) / g.scale
    m = g.mixture
    raw = np.stack([m.weights_[k] * multivariate_normal(m.means_[k], np.diag(m.covariances_[k])).pdf(xs) for k in g.survivors], axis=1)
    post = raw / raw.sum(axis=1, keepdims=True)
    # ... times the softmax of a plain DCNN holding each group's copy of the weights
    expected = np.zeros_like(got)
    for i, head in enumerate(model.heads):
        net = copy.deepcopy(model.shared).eval()
        for k in range(model.first_conv, len(net.convs)):
            net.convs[k].load_state_dict(head.convs[k - model.first_conv].state_dict())
        net.fc.load_state_dict(head.fc.state_dict())
        net.out.load_state_dict(head.out.state_dict())
        with torch.no_grad():
            probs = torch.softmax(net(*batch.args())["logits"], dim=1).numpy()
        expected += probs * post[:, [i]]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(expected, torch.softmax(model.shared(*batch.args())["logits"], dim=1).detach().numpy())


def test_components_below_the_share_are_merged():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (120, 3)), rng.normal(9, 1, (60, 3)), rng.normal(-9, 1, (20, 3))])
    three = fit_groups(x, max_components=6, concentration=1.0, min_share=0.05, random_state=0)
    assert three.n_groups == 3 and sorted(np.bincount(three.train_groups)) == [20, 60, 120]
    two = fit_groups(x, max_components=6, concentration=1.0, min_share=0.2, random_state=0)
    assert two.n_groups == 2 and two.posterior(x).shape == (200, 2)
    assert np.allclose(two.posterior(x).sum(axis=1), 1.0) and sum(two.shares) == pytest.approx(1.0)
    # the small component's members now belong to a survivor, the big ones keep theirs
    assert np.bincount(two.train_groups).sum() == 200 and len(set(two.train_groups[:120])) == 1
    assert len(set(two.train_groups[120:180])) == 1 and two.train_groups[0] != two.train_groups[120]
    assert sum(two.weights) == pytest.approx(1.0) and len(two.weights) == 2
    only = fit_groups(x, max_components=6, concentration=1.0, min_share=0.9, random_state=0)
    assert only.n_groups == 1 and (only.posterior(x) == 1.0).all()  # at least the largest survives


@pytest.mark.parametrize("freeze", ["fc", "fc_conv"])
def test_frozen_layers_are_unchanged_by_the_group_stage(manifest, freeze):
    data, _ = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(freeze=freeze), data, seed=0)
    _run_to_group_stage(tr)
    model = tr.model
    shared = {n: p.detach().clone() for n, p in model.shared.named_parameters()}
    heads = {n: p.detach().clone() for n, p in model.heads.named_parameters()}
    # every head starts as a copy of the trained shared layers
    for head in model.heads:
        assert torch.equal(head.fc.weight, model.shared.fc.weight) and torch.equal(head.out.bias, model.shared.out.bias)
    assert len(model.heads[0].convs) == (0 if freeze == "fc" else 1)
    while not tr.stopped:
        tr.step()
    tr.finalize()
    assert all(torch.equal(shared[n], p) for n, p in model.shared.named_parameters())  # conv1, conv2, fc, out
    changed = {n for n, p in model.heads.named_parameters() if not torch.equal(heads[n], p)}
    assert any(".fc." in n for n in changed)
    if freeze == "fc_conv":
        assert any(".convs.0." in n for n in changed)  # each group adapts its copy of conv2


def test_the_mixture_never_sees_validation_or_test_utterances(manifest, monkeypatch):
    seen = []
    real = nhnn_module.fit_groups

    def recording(x, **kw):
        seen.append(np.array(x))
        return real(x, **kw)

    monkeypatch.setattr(nhnn_module, "fit_groups", recording)
    data, fold = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(), data, seed=0)
    assert len(seen) == 1 and len(seen[0]) == len(fold.train)
    np.testing.assert_array_equal(seen[0], data.train.inputs["cluster"].data)
    # replacing every validation and test vector leaves the fitted mixture as it was
    held_out = set(fold.validation) | set(fold.test)
    cf = _cluster_features(manifest)
    noisy = np.where(manifest["utt_id"].isin(held_out).to_numpy()[:, None], cf.data * -7.0 + 3.0, cf.data)
    data2, _ = _fold(manifest, FakeFeatureSet("vector", cf.utt_ids, noisy.astype(np.float32)))
    tr2 = TorchFoldTrainer("nhnn", _config(), data2, seed=0)
    a, b = tr.model.groups, tr2.model.groups
    np.testing.assert_array_equal(a.mixture.means_, b.mixture.means_)
    np.testing.assert_array_equal(a.train_groups, b.train_groups)


def test_stage_one_is_the_dcnn_and_group_stage_off_predicts_with_it(manifest):
    data, _ = _fold(manifest)
    over = {k: TINY[k] for k in ("channels", "hidden", "epochs", "patience")}
    dcnn = TorchFoldTrainer("dcnn", registry.get("dcnn").config(overrides=over), data, seed=4).run()
    one = TorchFoldTrainer("nhnn", _config(stages="all-heads"), data, seed=4)
    res = one.run()
    np.testing.assert_array_equal(res.test_logits, dcnn.test_logits)
    assert res.model_record["group_stage"] is False and res.model_record["n_groups"] == 2


def test_per_group_selection_record_and_groups_without_validation(manifest):
    data, fold = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(), data, seed=0)
    res = tr.run()
    rec = res.model_record
    assert rec["group_stage"] and rec["freeze"] == "fc" and rec["n_groups"] == 2 == len(rec["groups"])
    assert sum(rec["weights"]) == pytest.approx(1.0) and sum(rec["shares"]) == pytest.approx(1.0)
    assert sum(g["n_train"] for g in rec["groups"]) == len(fold.train)
    assert sum(g["n_validation"] for g in rec["groups"]) == len(fold.validation)
    known = int((data.train.aux["gender"] >= 0).sum())
    assert sum(sum(g["gender"].values()) for g in rec["groups"]) == known
    assert all(set(g["gender"]) <= {"f", "m"} and set(g["speakers"]) <= set(manifest["speaker"]) for g in rec["groups"])
    # the clouds are speaker parities: each group holds whole speakers
    spk_sets = [set(g["speakers"]) for g in rec["groups"]]
    assert not spk_sets[0] & spk_sets[1]
    # one validation speaker (odd): the even group has no validation utterances, keeps the shared weights
    assert [g["kept_shared"] for g in rec["groups"]] == [g["n_validation"] == 0 for g in rec["groups"]]
    assert rec["kept_shared"] == [i for i, g in enumerate(rec["groups"]) if g["kept_shared"]] and len(rec["kept_shared"]) == 1
    group_epochs = sum(h["stage"] == 1 for h in res.history)
    assert all(1 <= g["best_group_epoch"] <= group_epochs for g in rec["groups"] if not g["kept_shared"])
    shared_fc = tr.model.shared.fc.weight
    for head, g in zip(tr.model.heads, rec["groups"]):
        assert torch.equal(head.fc.weight, shared_fc) == g["kept_shared"]
    # a group whose validation utterances are all gone keeps the shared weights
    model = tr.model
    model.begin_stage(1, tr.stages[1])
    copies = [copy.deepcopy(h.state_dict()) for h in model.heads]
    part = tr._part(data.validation)
    batch = part.batch(np.arange(part.n))
    out = model.eval().forward_batch(batch)
    out["posterior"] = torch.tensor([[1.0, 0.0]]).repeat(part.n, 1)  # every validation utterance in group 0
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(1.0)
    model.after_validation(part.whole(), out)
    model.after_training(None, {})
    assert model.fold_record()["kept_shared"] == [1] and model.fold_record()["groups"][1]["n_validation"] == 0
    assert all(torch.equal(v, copies[1][k]) for k, v in model.heads[1].state_dict().items())
    assert not torch.equal(model.heads[0].fc.weight, copies[0]["fc.weight"])  # selected after the change


def test_early_stop_none_keeps_every_heads_last_weights(manifest):
    data, _ = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(early_stop="none", patience=1), data, seed=0)
    while not tr.stopped:
        tr.step()
    trained = [copy.deepcopy(h.state_dict()) for h in tr.model.heads]
    res = tr.finalize()
    rec = res.model_record
    assert rec["head_selection"] == "last epoch" and rec["kept_shared"] == []
    assert res.epochs == res.best_epoch == sum(1 for _ in res.history)
    for head, state in zip(tr.model.heads, trained):
        assert all(torch.equal(v, state[k]) for k, v in head.state_dict().items())
    assert not torch.equal(tr.model.heads[0].fc.weight, tr.model.shared.fc.weight)


def test_after_validation_hook_sees_the_validation_part_once_per_epoch(manifest):
    data, fold = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(), data, seed=0)
    calls = []
    orig = tr.model.after_validation
    tr.model.after_validation = lambda batch, outputs: (calls.append((batch.n_utterances, batch.y.tolist())), orig(batch, outputs))
    res = tr.run()
    assert len(calls) == res.epochs
    assert all(c == (len(fold.validation), data.validation.y.tolist()) for c in calls)


def test_bad_settings_fail_early_with_the_choices():
    spec = registry.get("nhnn")
    from serray.models.contract import InputInfo

    info = InputInfo((8,), 3, shapes={"x": (8,), "cluster": (6,)})
    with pytest.raises(ValueError, match=r"freeze must be one of \['fc', 'fc_conv'\]"):
        spec.build(spec.config(overrides={"freeze": "conv"}), info)
    with pytest.raises(ValueError, match="covariance must be one of"):
        spec.build(spec.config(overrides={"covariance": "banded"}), info)
    with pytest.raises(ValueError, match=r"min_share must be in \[0, 1\)"):
        spec.build(spec.config(overrides={"min_share": 1.5}), info)


def test_group_loss_routes_each_utterance_to_its_head(manifest):
    data, _ = _fold(manifest)
    tr = TorchFoldTrainer("nhnn", _config(), data, seed=0)
    _run_to_group_stage(tr)
    model = tr.model.train()
    part = tr._part(data.train)
    group = model.groups.train_groups
    idx = np.flatnonzero(group == 0)[:5]  # a batch from group 0 only
    batch = part.batch(idx)
    model.zero_grad(set_to_none=True)
    out = model.forward_batch(batch)
    loss, _ = model.loss(batch, out)
    ref = F.cross_entropy(out["group_logits"][:, 0], batch.y)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    loss.backward()
    assert model.heads[0].fc.weight.grad is not None and model.heads[1].fc.weight.grad is None
    assert isinstance(model.shared, DCNN)


# -- issue 37, defect 2 ----------------------------------------------------------------


def _stage_steps(res, stage):
    return [h for h in res.history if h["stage"] == stage]


def test_group_stage_selects_among_its_own_epochs_with_its_own_patience(manifest):
    """The group stage replaces the dcnn: its best epoch (not the dcnn's peak) is the fold's,
    and its patience window starts at its own first epoch. A group stage at 1000 x the lr
    never beats the dcnn's validation loss, which used to end it after `patience` epochs
    with the dcnn's epoch as the fold's best."""
    data, _ = _fold(manifest)
    cfg = _config(epochs=10, patience=2, lr=3e-3, early_stop="loss", stages="all-heads;heads@8*1000")
    res = TorchFoldTrainer("nhnn", cfg, data, seed=0).run()
    one, two = _stage_steps(res, 0), _stage_steps(res, 1)
    assert two and min(h["val_loss"] for h in two) > min(h["val_loss"] for h in one)  # the scenario
    assert len(two) >= cfg["patience"] + 1  # its first epoch is its own reference
    assert res.best_epoch >= two[0]["epoch"]
    # the step that ends stage 1 still reports stage 1's best (not an empty one)
    assert one[-1]["best_epoch"] == min(one, key=lambda h: h["val_loss"])["epoch"]
    for i, h in enumerate(two):
        seen = two[: i + 1]
        best = min(seen, key=lambda s: s["val_loss"])
        assert h["best_epoch"] == best["epoch"] and h["best_val_ua"] == best["val_ua"]
    # the finalized model is the group stage's: its validation logits score what it reported
    assert res.history[-1]["best_val_loss"] == pytest.approx(min(h["val_loss"] for h in two))


def test_generic_multi_stage_plans_keep_the_best_epoch_of_any_stage(manifest):
    """dcnn fine-tuning plans are unchanged: a worse second stage keeps stage 1's best."""
    data, _ = _fold(manifest)
    over = {"channels": 8, "hidden": 8, "epochs": 10, "lr": 3e-3, "patience": 2, "early_stop": "loss", "stages": "all;fc+out@8*1000"}
    res = TorchFoldTrainer("dcnn", registry.get("dcnn").config(overrides=over), data, seed=0).run()
    one, two = _stage_steps(res, 0), _stage_steps(res, 1)
    assert min(h["val_loss"] for h in two) > min(h["val_loss"] for h in one)
    assert res.best_epoch == min(one, key=lambda h: h["val_loss"])["epoch"] and len(two) == 2


def test_stage_selection_all_is_refused_for_nhnn(manifest):
    data, _ = _fold(manifest)
    with pytest.raises(ValueError, match="stage_selection must be 'last'"):
        TorchFoldTrainer("nhnn", _config(stage_selection="all"), data, seed=0)


def test_speaker_normalisation_leaves_the_clustering_input_global(manifest):
    """--normalize speaker: the mfb frames are standardised per speaker, the eGeMAPS
    clustering input with the training part's statistics (its speaker differences kept)."""
    from serray.training.data import TrainingInputs
    from serray.training.trainer import fold_trainer

    spec = registry.get("nhnn")
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(spec.config()))
    ids = manifest["utt_id"].tolist()
    cf = _cluster_features(manifest)
    inputs = TrainingInputs({"x": pack_features(sequence_features(manifest), ids), "cluster": pack_features(cf, ids)}, table)
    fold = make_folds(manifest, "loso", seed=0)[0]
    tr = fold_trainer("nhnn", _config(), inputs, fold, normalize="speaker", seed=0, device="cpu")
    raw = np.asarray(cf.data, dtype=np.float64)
    train = table.index_of(fold.train)
    mean, std = raw[train].mean(axis=0), raw[train].std(axis=0)
    for part, utts in (("train", fold.train), ("test", fold.test)):
        got = getattr(tr.data, part).inputs["cluster"].data
        np.testing.assert_allclose(got, (raw[table.index_of(utts)] - mean) / std, rtol=1e-4, atol=1e-4)
    spk = np.asarray(table.speaker)[train]
    x_means = [tr.data.train.inputs["x"].take(np.flatnonzero(spk == s)).data.mean() for s in np.unique(spk)]
    assert np.allclose(x_means, 0.0, atol=1e-4)  # the network's input is speaker-normalised
    assert tr.model.groups.n_groups == 2  # the voice groups are still there


def _two_clusters(n=400, dim=88, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x[int(0.8 * n):, :20] += 3.0  # e.g. voice-quality and pitch functionals of one gender
    return x, np.arange(n) >= int(0.8 * n)


def test_default_mixture_converges_to_the_two_clusters_in_88_dimensions():
    """400 vectors of 88 dimensions (an EmoDB-sized training part), two clusters 80/20:
    the paper's full covariances stopped at their k-means start after 2 iterations with
    10 clusters; the default converges to the two."""
    x, minor = _two_clusters()
    spec_default = registry.get("nhnn").config()
    g = fit_groups(x, max_components=spec_default["max_components"], concentration=spec_default["dp_concentration"],
                   covariance=spec_default["covariance"], reg_covar=spec_default["dp_reg_covar"],
                   max_iter=spec_default["dp_max_iter"], min_share=spec_default["min_share"], random_state=0)
    assert g.mixture.converged_ and g.mixture.n_iter_ > 2
    assert g.n_groups == 2 and g.shares == pytest.approx([0.8, 0.2])
    assert len(set(g.train_groups[~minor])) == 1 and len(set(g.train_groups[minor])) == 1


def test_a_fit_stuck_at_its_start_is_logged(caplog):
    x, _ = _two_clusters()
    with caplog.at_level("WARNING", logger="serray.models.nhnn_groups"):
        g = fit_groups(x, covariance="full", random_state=0)
    assert g.mixture.n_iter_ <= 2 and "use covariance=diag" in caplog.text


@pytest.mark.parametrize("covariance", ["full", "diag", "tied", "spherical"])
def test_posterior_is_eq_8_of_the_fitted_mixture(covariance):
    """P(group i | x) = w_i N(x | mu_i, Sigma_i) / sum over survivors (paper eq. 8)."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(2.5, 1, (40, 3)), rng.normal(-6, 0.5, (5, 3))])
    g = fit_groups(x, max_components=4, concentration=1.0, covariance=covariance, min_share=0.1, random_state=0)
    m, xs = g.mixture, (x - g.mean) / g.scale
    covs = {"full": lambda k: m.covariances_[k], "tied": lambda k: m.covariances_,
            "diag": lambda k: np.diag(m.covariances_[k]), "spherical": lambda k: m.covariances_[k] * np.eye(3)}[covariance]
    dens = np.stack([m.weights_[k] * multivariate_normal(m.means_[k], covs(k)).pdf(xs) for k in g.survivors], axis=1)
    np.testing.assert_allclose(g.posterior(x), dens / dens.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_nhnn_parameter_counts_are_the_papers():
    """Sec. 3.3, two groups, three classes: NHNN FC 192,518 and NHNN FC+Conv 274,438
    parameters (the frozen shared convolutions plus every group's head)."""
    from serray.models.contract import InputInfo
    from serray.models.nhnn import GroupHead

    spec = registry.get("nhnn")
    for freeze, expected in (("fc", 192_518), ("fc_conv", 274_438)):
        model = spec.build(spec.config(overrides={"freeze": freeze}), InputInfo((40,), 3, shapes={"x": (40,), "cluster": (88,)}))
        shared = sum(p.numel() for conv in model.shared.convs[: model.first_conv] for p in conv.parameters())
        heads = [GroupHead(model.shared, model.first_conv) for _ in range(2)]
        assert shared + sum(p.numel() for h in heads for p in h.parameters()) == expected


def test_paper_arms_are_named_variants():
    from serray.training.seeds import variant_overrides

    spec = registry.get("nhnn")
    assert variant_overrides(spec, "fc_conv", {}) == {"freeze": "fc_conv"}
    assert variant_overrides(spec, "fc", {"lr": 1e-4}) == {"freeze": "fc", "lr": 1e-4}
    assert spec.config(overrides=variant_overrides(spec, "fc_conv", {}))["freeze"] == "fc_conv"
    assert sorted(spec.variants) == ["fc", "fc_conv"]


def test_search_scores_the_finalized_mixture_not_an_epochs_logits(manifest):
    """Each group's head is installed at its own best epoch after training, so a search must
    score the finalized predictions (the mixture keys and freeze count), as for mtl's ELM."""
    from serray.training.data import class_list
    from serray.tune.trial import finalized_objective as _finalized_objective

    data, _ = _fold(manifest)
    res = TorchFoldTrainer("nhnn", _config(), data, seed=0).run()
    preds = res.predictions_frame()
    val = preds[preds["split"] == "validation"]
    finalized, objective = _finalized_objective("nhnn", preds, class_list(manifest["emotion"]), epochs_value=0.123)
    assert objective == finalized != 0.123
    assert finalized == pytest.approx(float(np.mean([(val["pred"][val["label"] == c] == c).mean()
                                                    for c in sorted(set(val["label"]))])))
