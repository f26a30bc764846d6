"""serray export --onnx: one kept fold model of every registered model family, exported
together; each torch family's graph, run with onnxruntime on its fold's normalised test
inputs, gives the fold's test logits (max abs difference <= 1e-4), or the family is listed
with its reason (scikit-learn ones: "not a torch model"); the graphs are covered by the
export's checksums and listed in the model card; ``serray.load(DIR, runtime="onnx")``
scores with them."""

from __future__ import annotations

import json

import numpy as np
import pytest

for _module in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_module, reason="serray export --onnx needs the onnx extra (pip install 'serray[onnx]')")

import serray  # noqa: E402
from serray.artifacts import ArtifactError, read_fold_model, write_fold_model  # noqa: E402
from serray.artifacts.onnx_export import NOT_TORCH, onnx_feeds  # noqa: E402
from serray.models import registry  # noqa: E402
from serray.workdir import Workdir  # noqa: E402

from _training_helpers import synth_manifest  # noqa: E402
from test_artifacts import _raw_test, _train_kept  # noqa: E402

RUN = "families"


def _member(name: str) -> str:
    return f"members/{RUN}/{name}__seed0/fold0"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run holding one kept fold model per registered family, exported with ``--onnx``
    through the CLI; (export folder, export.json, family -> (result, inputs, fold))."""
    from click.testing import CliRunner

    from serray.cli import main

    manifest = synth_manifest(n_speakers=4, per_class=4)
    manifest["naturalness"] = np.where(manifest["speaker"].str[-1].astype(int) % 2 == 0, "acted", "natural")  # for mtl
    w = tmp_path_factory.mktemp("onnx") / "w"
    cases = {}
    for name in registry.names():
        res, inputs, fold = _train_kept(manifest, name)
        write_fold_model(Workdir(w).fold_model(RUN, name, 0, 0), res.kept, {r: {"set": "synthetic", "params": {}} for r in inputs.packed})
        cases[name] = (res, inputs, fold)
    out = w.parent / "export"
    r = CliRunner().invoke(main, ["export", str(w), "--runs", RUN, "--out", str(out), "--onnx"])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "export.json").read_text()), cases


def test_every_member_has_a_graph_or_a_reason_in_export_json_and_the_card(exported):
    out, meta, _ = exported
    graphs = meta["onnx"]
    assert sorted([*graphs["exported"], *graphs["not_exported"]]) == sorted(meta["members"])
    card = (out / "README.md").read_text()
    for name in registry.names():
        member = _member(name)
        if registry.get(name).backend == "sklearn":
            assert graphs["not_exported"][member] == NOT_TORCH
        if member in graphs["not_exported"]:
            reason = graphs["not_exported"][member]
            assert reason and "\n" not in reason and f"- `{member}`: no ONNX graph: {reason}" in card
            assert not (out / member / "model.onnx").exists()
        else:
            for f in ("model.onnx", "onnx.json"):
                assert f"{member}/{f}" in meta["files"]  # the checksums cover the graphs
    # the graph covers every input kind (vectors, padded frame sequences, segment stacks)
    kinds = {i["kind"] for m in graphs["exported"] for i in read_fold_model(out / m).inputs.values()}
    assert kinds == {"vector", "sequence", "segments"}
    assert f"{len(graphs['exported'])} member(s) have `model.onnx`" in card


@pytest.mark.parametrize("name", [n for n in registry.names() if registry.get(n).backend == "torch"])
def test_onnx_graph_gives_the_folds_test_logits(exported, name):
    """onnxruntime on the fold's normalised test inputs (a batch of another size, and frame
    counts other than the export's example: dynamic axes) reproduces the stored test logits."""
    import onnxruntime

    out, meta, cases = exported
    member = _member(name)
    if member not in meta["onnx"]["exported"]:
        assert meta["onnx"]["not_exported"][member]  # listed with its reason, not silently dropped
        return
    res, inputs, fold = cases[name]
    model = read_fold_model(out / member)
    info = json.loads((out / member / "onnx.json").read_text())
    assert info["classes"] == model.classes == list(res.classes)
    assert [i["name"] for i in info["inputs"]] == meta["onnx"]["exported"][member]["inputs"]
    assert all(info["normalize"][r]["mode"] == "global" for r in model.inputs)
    packed, speakers, aux = _raw_test(inputs, fold)
    norm = {role: model.normalized(role, packed[role], speakers) for role in model.inputs}
    session = onnxruntime.InferenceSession(str(out / member / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] in ("batch", "segments")
    got = session.run(["logits"], onnx_feeds(info, norm, aux))[0]
    assert got.shape == res.test_logits.shape
    assert np.abs(got - res.test_logits).max() <= 1e-4
    # serray.load(runtime="onnx"): the same logits from raw features, in chunks padded each to its own length
    member_model = serray.load(out / member, runtime="onnx").members[0]
    member_model.meta["config"]["eval_batch_size"] = 3
    assert np.abs(member_model.logits(packed, speakers=speakers, aux=aux) - res.test_logits).max() <= 1e-4


def test_a_changed_graph_is_refused_runtime_onnx_needs_every_graph_and_onnx_needs_its_packages(exported, tmp_path, monkeypatch):
    out, meta, _ = exported
    serray.load(out)  # the graphs and their metadata are no obstacle to loading
    graph = out / next(iter(meta["onnx"]["exported"])) / "model.onnx"
    original = graph.read_bytes()
    graph.write_bytes(original + b"x")
    try:
        with pytest.raises(ArtifactError, match="model.onnx: checksum mismatch"):
            serray.load(out)
    finally:
        graph.write_bytes(original)
    with pytest.raises(ArtifactError, match=r"model.onnx: missing; runtime='onnx' needs every member exported"):
        serray.load(out, runtime="onnx")  # the scikit-learn members have no graph
    with pytest.raises(ValueError, match=r"runtime must be one of \['torch', 'onnx'\]"):
        serray.load(out, runtime="tflite")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    with pytest.raises(ValueError, match=r"--onnx needs onnxruntime: pip install 'serray\[onnx\]'"):
        serray.artifacts.export_models(out.parent / "w", RUN, tmp_path / "x", onnx=True)
    assert not (tmp_path / "x").exists()


def test_a_graph_that_differs_from_torch_is_not_kept(exported, tmp_path, monkeypatch):
    """The export's onnxruntime check: a graph whose logits differ from the torch model's
    (here the reference shifted by 1) is removed and the member gets the reason."""
    import shutil

    from serray.artifacts import onnx_export

    out, _, _ = exported
    folder = tmp_path / "m"
    shutil.copytree(out / _member("mlp"), folder)
    for f in ("model.onnx", "onnx.json"):
        (folder / f).unlink()
    real = onnx_export._logits_graph

    def shifted(model, inputs, aux_roles, exportable=True):
        graph = real(model, inputs, aux_roles, exportable)
        return graph if exportable else (lambda *tensors: graph(*tensors) + 1.0)

    monkeypatch.setattr(onnx_export, "_logits_graph", shifted)
    with pytest.raises(onnx_export.NotExportable, match=r"the ONNX logits differ from torch's by 1 \(tolerance 0.0001\)"):
        onnx_export.export_member(folder)
    assert not (folder / "model.onnx").exists() and not (folder / "onnx.json").exists()


def test_predict_cli_runtime_onnx_gives_the_torch_probabilities_on_audio(synth_copy, tmp_path):
    """An mlp trained on the synthetic corpus's audio (eGeMAPS), exported with --onnx:
    `serray predict --runtime onnx` writes the probabilities and labels of `--runtime torch`."""
    import pandas as pd
    from click.testing import CliRunner

    from serray.cli import main
    from serray.manifest import load_manifests
    from serray.training.resources import Resources
    from serray.training.run import train_run
    from serray.training.spec import RunSpec

    w = synth_copy
    train_run(RunSpec(str(w), "mlp", features="egemaps", protocol="kfold", k=2, corpora=["synth_a"],
                      config={"epochs": 3}), run_name="mlp-onnx", resources=Resources(parallel=False))
    out = tmp_path / "exp"
    r = CliRunner().invoke(main, ["export", str(w), "--runs", "mlp-onnx", "--out", str(out), "--onnx"])
    assert r.exit_code == 0, r.output
    audio = sorted(load_manifests(w)["path"])[:6]
    tables = {}
    for runtime in ("torch", "onnx"):
        csv = tmp_path / f"{runtime}.csv"
        r = CliRunner().invoke(main, ["predict", str(out), *audio, "--out", str(csv), "--no-progress", "--runtime", runtime])
        assert r.exit_code == 0, r.output
        tables[runtime] = pd.read_csv(csv)
    probs = [c for c in tables["torch"].columns if c.startswith("prob_")]
    assert len(probs) == 4 and (tables["onnx"]["error"].fillna("") == "").all()
    assert np.abs(tables["onnx"][probs].to_numpy() - tables["torch"][probs].to_numpy()).max() <= 1e-5
    assert list(tables["onnx"]["label"]) == list(tables["torch"]["label"])
