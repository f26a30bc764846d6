"""The model-family contract: conformance of every registered model, stages, the prepare
hook, auxiliary labels, and logits unchanged by the redesign (golden file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from serray.models import registry
from serray.models.contract import Batch, InputInfo, InputSpec, parse_stages
from serray.models.layers import SERModule, masked_cross_entropy
from serray.models.registry import ModelSpec
from serray.protocols import make_folds
from serray.training.executor import run_folds
from serray.training.data import TrainingInputs, build_fold_data, class_list, make_label_table, pack_features
from serray.training.trainer import TorchFoldTrainer, make_trainer, total_epochs
from serray.training.resources import Resources

from _training_helpers import (
    SEGMENT_SHAPE, TINY, features_of_kind, segment_features, sequence_features, synth_manifest, vector_features,
)

GOLDEN = Path(__file__).parent / "data" / "golden_logits_v0.npz"


@pytest.fixture(scope="module")
def manifest():
    m = synth_manifest(n_speakers=4, per_class=4)
    m.loc[m.index[::7], "gender"] = None  # some unknown genders: masked, never guessed
    m["naturalness"] = np.where(m["speaker"].str[-1].astype(int) % 2 == 0, "acted", "natural")  # for mtl
    return m


def _fold(manifest, spec, config, fold_index=0):
    table = make_label_table(manifest, class_list(manifest["emotion"]), aux_columns=spec.aux_columns(config))
    packed = {r: pack_features(features_of_kind(manifest, i.kind), manifest["utt_id"].tolist()) for r, i in spec.inputs.items()}
    fold = make_folds(manifest, "loso", seed=0, validation="fraction")[fold_index]  # the golden file's design
    return build_fold_data(packed, table, fold, "global"), fold


def _config(spec, **extra):
    return spec.config(overrides={**TINY.get(spec.name, {}), **({"epochs": 2} if spec.backend == "torch" else {}), **extra})


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_conforms(manifest, name):
    """Build from the spec, forward a batch of its declared inputs, finite loss that
    backpropagates, utterance logits of the right shape, parameter groups cover every
    parameter once, and a frozen stage leaves its parameters bit-identical."""
    spec = registry.get(name)
    assert spec.inputs and all(isinstance(i, InputSpec) for i in spec.inputs.values())
    cfg = _config(spec)
    data, fold = _fold(manifest, spec, cfg)
    if spec.backend == "sklearn":
        res = make_trainer(spec, cfg, data, seed=0).run()
        assert res.test_logits.shape == (len(fold.test), len(data.classes)) and np.isfinite(res.test_logits).all()
        return
    tr = TorchFoldTrainer(spec, cfg, data, seed=0, device="cpu")
    groups = tr.model.parameter_groups()
    names = sorted(n for n, _ in tr.model.named_parameters())
    assert sorted(n for ns in groups.values() for n in ns) == names
    part = tr._part(data.train)
    batch = part.batch(np.arange(min(6, part.n)))
    out = tr.model.forward_batch(batch)
    loss, parts = tr.model.loss(batch, out)
    assert torch.isfinite(loss) and parts and all(torch.isfinite(v) for v in parts.values())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tr.model.parameters())
    logits = tr.model.utterance_logits(part.whole(), {k: v for k, v in tr.model.forward_batch(part.batch(np.arange(part.n))).items()})
    assert tuple(logits.shape) == (len(data.train), len(data.classes))
    # stages: the first group frozen in a second stage stays bit-identical through it
    first = next(iter(groups))
    plan = f"all@1;all-{first}@2" if len(groups) > 1 else "all@1;all@1"
    staged = TorchFoldTrainer(spec, _config(spec, stages=plan), data, seed=0, device="cpu")
    staged.step()
    assert staged._stage == 1
    before = {n: p.detach().clone() for n, p in staged.model.named_parameters() if n in groups[first]}
    while not staged.stopped:
        staged.step()
    assert staged._epoch == 3 and [h["stage"] for h in staged.history] == [0, 1, 1]
    if len(groups) > 1:
        after = dict(staged.model.named_parameters())
        assert all(torch.equal(before[n], after[n]) for n in before)
    assert total_epochs(spec, _config(spec, stages=plan)) == 3


def test_logits_unchanged_by_the_contract_redesign(manifest):
    """Every model existing before the model-family contract gives the logits it gave then
    (file written with the old code; identical bits on the machine that wrote it).

    On another CPU (e.g. AVX-512 instead of AVX2 kernels) the float rounding differs: the
    feed-forward and convolutional models stay within 3e-7, the LSTM accumulates up to
    1e-4 over its three epochs. A change of logic moves logits by orders of magnitude more.
    """
    torch.set_num_threads(1)
    man = synth_manifest(n_speakers=4, per_class=4)
    classes = class_list(man["emotion"])
    folds = make_folds(man, "loso", seed=0, validation="fraction")[:2]  # the golden file's design
    cases = {
        "svm": ({"refit": False}, vector_features(man), "global"),  # the golden file predates refit
        "logreg": ({"refit": False}, vector_features(man), "speaker"),
        "mlp": ({"epochs": 6, "patience": 3}, vector_features(man), "global"),
        # the golden dcnn logits predate the kernel sizes of paper 000's parameter counts
        # (conv1 kernel 15, no convolution biases): one kernel 5 with biases then
        "dcnn": ({"epochs": 4, "channels": 8, "hidden": 8, "max_frames": 15, "first_kernel": 5, "conv_bias": True},
                 sequence_features(man), "global"),
        "cnn_lstm": ({"epochs": 3, "channels": [4, 4], "lstm_hidden": 6}, sequence_features(man), "speaker"),
    }
    ad = {"epochs": 3, "conv_channels": [2, 2, 2, 4], "pool_sizes": [2, 2, 1, 1], "embedding_dim": 8, "lr": 0.05}
    # the golden ADARL logits predate Table 1's (3, 3) default of the second branch (5 then),
    # and "adarl-backbone" the renaming of the pathway-free variant to emotion_only
    ad["kernel_sizes_second_branch"] = 5
    ad["attention_fc1_bias"] = None  # and the positive attention bias (PyTorch's default init then)
    for key, v in (("attention", "attention"), ("backbone", "emotion_only"), ("adversarial", "adversarial")):
        cases[f"adarl-{key}"] = ({**ad, "variant": v}, segment_features(man, shape=SEGMENT_SHAPE), "global")
    golden = np.load(GOLDEN)
    for name, (over, fs, norm) in cases.items():
        spec = registry.get(name.split("-")[0])
        cfg = spec.config(overrides=over)
        table = make_label_table(man, classes, aux_columns=spec.aux_columns(cfg))
        inputs = TrainingInputs(pack_features(fs, man["utt_id"].tolist()), table)
        for r in run_folds(spec, cfg, inputs, folds, normalize=norm, seed=3, resources=Resources(parallel=False)):
            for part, got in (("val", r.validation_logits), ("test", r.test_logits)):
                atol = 5e-4 if name == "cnn_lstm" else 1e-6
                np.testing.assert_allclose(got, golden[f"{name}/{r.index}/{part}"], rtol=1e-5, atol=atol, err_msg=name)
            hist = [h["train_loss"] for h in r.history]
            np.testing.assert_allclose(hist, golden[f"{name}/{r.index}/hist"], rtol=1e-5 if name != "cnn_lstm" else 1e-4)


def test_frozen_batch_norm_keeps_its_statistics(manifest):
    spec = registry.get("cnn_lstm")
    data, _ = _fold(manifest, spec, _config(spec))
    tr = TorchFoldTrainer(spec, _config(spec, stages="all@1;lstm+out@2"), data, seed=0, device="cpu")
    tr.step()
    state = {k: v.clone() for k, v in tr.model.state_dict().items() if k.startswith(("convs.", "norms."))}
    while not tr.stopped:
        tr.step()
    now = tr.model.state_dict()
    assert all(torch.equal(state[k], now[k]) for k in state)  # weights and running statistics
    assert any("running_mean" in k for k in state)


def test_stage_plans_and_errors():
    spec = registry.get("dcnn")
    assert parse_stages("fc", ["conv1", "conv2", "fc", "out"], spec.stage_plans)[1].train == ("fc", "out")
    assert parse_stages("fc_conv", ["conv1", "conv2", "fc", "out"], spec.stage_plans)[1].train == ("conv2", "fc", "out")
    with pytest.raises(ValueError, match=r"unknown parameter group\(s\) \['lstm'\]"):
        parse_stages("all;lstm", ["conv1", "fc"])
    with pytest.raises(ValueError, match="plan name"):
        parse_stages("", ["a"])
    from serray.training.trainer import check_config

    with pytest.raises(ValueError, match="epochs must be >= 1"):
        check_config(spec, spec.config(overrides={"stages": "all;fc@0"}))
    # configs that do not set stages keep their config id (stages is filled only when set)
    assert "stages" not in check_config(spec, spec.config())


class _Recorder(SERModule):
    """Records what its prepare hook received."""

    seen: list = []

    def __init__(self, dim, n_classes):
        super().__init__()
        self.fc = nn.Linear(dim, n_classes)
        self.register_buffer("mean", torch.zeros(dim))

    def prepare(self, part):
        _Recorder.seen.append(list(part.utt_ids))
        self.mean = torch.from_numpy(part.inputs["x"].data.mean(axis=0))

    def forward(self, x):
        return {"logits": self.fc(x - self.mean)}


def test_prepare_hook_sees_only_the_training_part(manifest):
    spec = ModelSpec(
        name="_recorder", backend="torch", inputs={"x": InputSpec("vector", ("egemaps",))},
        default_config={"epochs": 1, "batch_size": 8, "lr": 0.01, "patience": 0},
        build=lambda cfg, info: _Recorder(info.shape[0], info.n_classes),
    )
    _Recorder.seen.clear()
    data, fold = _fold(manifest, spec, spec.config())
    TorchFoldTrainer(spec, spec.config(), data, seed=0).run()
    assert _Recorder.seen == [list(fold.train)]
    assert not set(_Recorder.seen[0]) & (set(fold.validation) | set(fold.test))


class _Hooked(SERModule):
    """Uses every optional trainer hook and records what each received."""

    GROUPS = {"body": ("fc",), "head": ("head",)}

    def __init__(self, dim, n_classes):
        super().__init__()
        self.fc = nn.Linear(dim, 4)
        self.head = nn.Linear(4, n_classes)
        self.calls: list = []
        self.bias = torch.zeros(n_classes)

    def forward(self, x):
        return {"logits": self.head(self.fc(x)) + self.bias}

    def begin_stage(self, index, stage):
        self.calls.append(("stage", index, tuple(stage.train), self.fc.weight.requires_grad))

    def batch_order(self, y, batch_size, rng):
        self.calls.append(("order", len(y)))
        return [np.flatnonzero(y == c) for c in np.unique(y)]  # one batch per class

    def after_training(self, batch, outputs):
        self.calls.append(("after", int(batch.n_utterances), tuple(outputs["logits"].shape), self.training))
        self.bias = torch.full_like(self.bias, 0.0).index_fill_(0, torch.tensor([0]), 100.0)

    def fold_record(self):
        return {"calls": len(self.calls)}


def test_optional_hooks_stage_order_backend_and_record(manifest):
    spec = ModelSpec(
        name="_hooked", backend="torch", inputs={"x": InputSpec("vector", ("egemaps",))},
        default_config={"epochs": 2, "batch_size": 8, "lr": 0.01, "patience": 0, "stages": "all@1;head@1"},
        build=lambda cfg, info: _Hooked(info.shape[0], info.n_classes),
    )
    data, fold = _fold(manifest, spec, spec.config())
    trainer = TorchFoldTrainer(spec, spec.config(), data, seed=0)
    result = trainer.run()
    calls = trainer.model.calls
    stages = [c for c in calls if c[0] == "stage"]
    assert [c[1:3] for c in stages] == [(0, ("body", "head")), (1, ("head",))]
    assert [c for c in calls if c[0] == "order"] == [("order", len(fold.train))] * 2
    after = [c for c in calls if c[0] == "after"]
    assert after == [("after", len(fold.train), (len(fold.train), len(data.classes)), False)]
    assert calls[-1][0] == "after"  # once, after training, before the final predictions
    assert (result.test_logits.argmax(axis=1) == 0).all()  # the back-end fitted after training decides
    assert result.model_record == {"calls": len(calls)}


class _Plain(SERModule):
    def __init__(self, dim, n_classes):
        super().__init__()
        self.fc = nn.Linear(dim, n_classes)
        self.bias = torch.zeros(n_classes)

    def forward(self, x):
        return {"logits": self.fc(x) + self.bias}


class _Evaluated(_Plain):
    """Records what after_evaluation receives, then tries to change the predictions."""

    def __init__(self, dim, n_classes):
        super().__init__(dim, n_classes)
        self.seen: list = []

    def after_evaluation(self, part, batch, outputs):
        self.seen.append((part, int(batch.n_utterances), batch.y.tolist(), tuple(outputs["logits"].shape), self.training))
        self.bias = self.bias.index_fill(0, torch.tensor([0]), 100.0)

    def fold_record(self):
        return {"parts": [p[0] for p in self.seen]}


def test_after_evaluation_sees_validation_then_test_after_the_final_logits(manifest):
    def spec(cls):
        return ModelSpec(name="_eval", backend="torch", inputs={"x": InputSpec("vector", ("egemaps",))},
                         default_config={"epochs": 2, "batch_size": 8, "lr": 0.01, "patience": 0},
                         build=lambda cfg, info: cls(info.shape[0], info.n_classes))

    data, fold = _fold(manifest, spec(_Evaluated), spec(_Evaluated).config())
    trainer = TorchFoldTrainer(spec(_Evaluated), spec(_Evaluated).config(), data, seed=0)
    res = trainer.run()
    n_classes = len(data.classes)
    assert trainer.model.seen == [("validation", len(fold.validation), data.validation.y.tolist(), (len(fold.validation), n_classes), False),
                                  ("test", len(fold.test), data.test.y.tolist(), (len(fold.test), n_classes), False)]
    assert res.model_record == {"parts": ["validation", "test"]}
    plain = TorchFoldTrainer(spec(_Plain), spec(_Plain).config(), data, seed=0).run()
    np.testing.assert_array_equal(res.test_logits, plain.test_logits)  # the hook changed no prediction
    np.testing.assert_array_equal(res.validation_logits, plain.validation_logits)


def test_auxiliary_labels_are_masked_where_unknown(manifest):
    table = make_label_table(manifest, aux_columns={"gender": "gender", "gc": "gender*corpus"})
    unknown = manifest["gender"].isna().to_numpy()
    assert (table.aux["gender"][unknown] == -1).all() and (table.aux["gender"][~unknown] >= 0).all()
    assert table.aux_names["gc"] == ("fxsyn", "mxsyn") and (table.aux["gc"][unknown] == -1).all()
    with pytest.raises(ValueError, match="'language'.*not in the manifest"):
        make_label_table(manifest, aux_columns={"lang": "language"})
    logits, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    mask = torch.tensor([True, False, True, False])
    torch.testing.assert_close(masked_cross_entropy(logits, y, mask), nn.functional.cross_entropy(logits[mask], y[mask]))
    assert masked_cross_entropy(logits, y, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_mtl_cnn_trains_both_heads_and_records_each_loss_term(manifest):
    spec = registry.get("mtl_cnn")
    cfg = _config(spec, epochs=3, w_gender=0.5)
    data, _ = _fold(manifest, spec, cfg)
    assert data.aux_names == {"gender": ("f", "m")}
    tr = TorchFoldTrainer(spec, cfg, data, seed=1, device="cpu")
    res = tr.run()
    parts = [h["loss_parts"] for h in res.history]
    assert all(set(p) == {"emotion", "gender"} for p in parts)
    for h in res.history:  # the total is the weighted sum of the logged terms
        assert h["train_loss"] == pytest.approx(h["loss_parts"]["emotion"] + 0.5 * h["loss_parts"]["gender"], rel=1e-5)
    with torch.no_grad():
        batch = tr._part(data.test).batch(np.arange(3), labels=False)
        assert set(tr.model.forward_batch(batch)) >= {"logits", "gender_logits"}
    # w_gender = 0 gives the dcnn emotion loss alone: the gender head gets no gradient
    tr0 = TorchFoldTrainer(spec, _config(spec, w_gender=0.0), data, seed=1, device="cpu")
    b = tr0._part(data.train).batch(np.arange(6))
    loss, _ = tr0.model.loss(b, tr0.model.forward_batch(b))
    loss.backward()
    assert tr0.model.gender_out.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("name", [n for n in registry.names() if registry.get(n).backend == "torch"])
def test_class_weight_balanced_weights_every_models_emotion_loss(manifest, name):
    """``class_weight=balanced``: the trainer hands every training batch the weights
    n / (C * n_c) of the fold's training part, and every torch model's emotion term uses
    them (a batch with uneven classes gives a different emotion loss than unweighted)."""
    spec = registry.get(name)
    keep = ~((manifest["emotion"] == manifest["emotion"].iloc[0]) & (manifest.groupby("speaker").cumcount() % 4 != 0))
    man = manifest[keep.to_numpy()].reset_index(drop=True)  # one class left with a quarter of its utterances
    cfg = _config(spec, class_weight="balanced", epochs=1)
    data, _ = _fold(man, spec, cfg)
    tr = TorchFoldTrainer(spec, cfg, data, seed=0, device="cpu")
    seen = []
    loss_of = tr.model.loss
    tr.model.loss = lambda batch, out: (seen.append(batch.class_weights), loss_of(batch, out))[1]
    tr.step()
    counts = np.bincount(data.train.y, minlength=len(data.classes))
    expected = len(data.train.y) / (len(data.classes) * counts)
    assert seen and all(w is not None for w in seen)
    np.testing.assert_allclose(seen[0].numpy(), expected, rtol=1e-6)
    assert expected.max() > 1.5 * expected.min()
    part = tr._part(data.train)
    batch = part.batch(np.arange(part.n))
    torch.manual_seed(0)
    tr.model.eval()
    out = tr.model.forward_batch(batch)
    plain = loss_of(batch, out)[1]["emotion"]
    batch.class_weights = torch.as_tensor(expected, dtype=torch.float32)
    weighted = loss_of(batch, out)[1]["emotion"]
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted, rtol=1e-4)
