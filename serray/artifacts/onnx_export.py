"""ONNX graphs of kept torch fold models (``serray export --onnx``).

Each torch member of an export gets ``model.onnx`` next to its weights: the fold model's
utterance logits as :meth:`FoldModel.logits <serray.artifacts.fold_model.FoldModel.logits>`
computes them, built from the kept config and safetensors weights exactly as prediction
builds it, and exported with :func:`torch.onnx.export` (the ``torch.export``-based
exporter, which needs ``onnx`` and ``onnxscript``: ``pip install 'serray[onnx]'``).
``onnx.json`` beside it says what the graph expects (:func:`graph_inputs`):

- a ``vector`` input ``R``: float32 ``[batch, D]``;
- a ``sequence`` input ``R``: float32 ``[batch, time_R, D]``, every utterance's frames
  zero-padded at the end, and ``R_lengths``: int64 ``[batch]`` valid frames;
- a ``segments`` input ``R``: float32 ``[segments, C, F, T]``, the segments of all
  utterances one after another, and ``R_counts``: int64 ``[batch]``, how many segments
  each utterance has (at least one; they sum to ``segments``);
- an auxiliary input the model reads at prediction time (``domain``): int64 ``[batch]``
  class codes, -1 where unknown;

and gives ``logits`` float32 ``[batch, n_classes]`` in the class order of ``classes``
(softmax for probabilities; an export fuses its members by the sum of their logits).
Inputs are fed **after** normalisation, done outside the graph as the member records it
(``global``: ``(x - norm.R.mean) / norm.R.std`` with the arrays of ``arrays.npz``,
before padding; ``utterance``: each utterance's own frame mean and std; ``speaker``:
each speaker's own statistics; ``none``: raw). The batch axis, the time axis of frame
inputs and the segment axis are dynamic.

A model whose graph cannot be exported (an operation outside the exporter, a fitted
back-end computed with numpy) is not written; its one-line reason is returned, and so is
``"not a torch model"`` for scikit-learn members. Every written graph is checked with
onnxruntime against the torch model on inputs of another batch size and length than the
export's example (max abs difference of the logits at most :data:`TOLERANCE`).

Example:
    >>> graph_inputs({"x": {"kind": "sequence", "shape": [40]}}, ())[1]["name"]
    'x_lengths'
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from serray.artifacts.files import ArtifactError
from serray.artifacts.fold_model import FoldModel, read_fold_model

__all__ = ["ONNX_FILE", "ONNX_META", "TOLERANCE", "NOT_TORCH", "NotExportable", "graph_inputs", "onnx_feeds", "require_onnx",
           "export_member", "export_onnx", "OnnxFoldModel", "onnx_members"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_META = "onnx.json"
#: Largest max abs difference between the ONNX and the torch logits that passes the export's check.
TOLERANCE = 1e-4
NOT_TORCH = "not a torch model"


def graph_inputs(inputs: Mapping[str, Mapping[str, Any]], aux_roles: Sequence[str]) -> list[dict[str, Any]]:
    """The graph's inputs in order: ``name``, ``dtype``, ``shape`` (axis names or sizes), ``role``,
    ``kind`` (``vector``, ``frames``, ``lengths``, ``segments``, ``counts`` or ``codes``) and ``what``."""

    def item(name: str, kind: str, shape: list, role: str, what: str) -> dict[str, Any]:
        dtype = "int64" if kind in ("lengths", "counts", "codes") else "float32"
        return {"name": name, "dtype": dtype, "shape": shape, "role": role, "kind": kind, "what": what}

    out: list[dict[str, Any]] = []
    for role, spec in inputs.items():
        shape = [int(s) for s in spec["shape"]]
        if spec["kind"] == "vector":
            out.append(item(role, "vector", ["batch", *shape], role, "features"))
        elif spec["kind"] == "sequence":
            out.append(item(role, "frames", ["batch", f"time_{role}", *shape], role, "frames, zero-padded at the end"))
            out.append(item(f"{role}_lengths", "lengths", ["batch"], role, "valid frames per utterance"))
        else:
            out.append(item(role, "segments", ["segments", *shape], role, "segments of all utterances, one utterance after another"))
            out.append(item(f"{role}_counts", "counts", ["batch"], role, "segments per utterance (>= 1, summing to segments)"))
    out += [item(role, "codes", ["batch"], role, "class codes, -1 where unknown") for role in aux_roles]
    return out


def _logits_graph(model: Any, inputs: Mapping[str, Mapping[str, Any]], aux_roles: Sequence[str], exportable: bool = True) -> Any:
    """A module of flat tensors (:func:`graph_inputs` order) -> utterance logits, as prediction computes them.

    ``exportable``: segment logits are averaged by :func:`_mean_segment_logits` where the
    model keeps the default :meth:`~serray.models.layers.SERModule.utterance_logits`
    (``False``: always the model's own method, the reference of the export's check)."""
    import torch

    from serray.models.contract import Batch
    from serray.models.layers import SERModule

    kinds = {role: spec["kind"] for role, spec in inputs.items()}
    primary = next(iter(kinds))

    class LogitsGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            it = iter(tensors)
            xs, lengths, owner, n = {}, {}, None, None
            for role, kind in kinds.items():
                xs[role] = next(it)
                if kind == "sequence":
                    lengths[role] = next(it)
                elif kind == "segments":
                    counts = next(it)  # the utterance of every segment: how many utterances end at or before it
                    ends = torch.cumsum(counts, dim=0)
                    owner = (torch.arange(xs[role].shape[0]).unsqueeze(0) >= ends.unsqueeze(1)).sum(dim=0)
                    n = counts.shape[0]
            codes = {role: next(it) for role in aux_roles}
            n = xs[primary].shape[0] if n is None else n
            batch = Batch(xs, lengths, None, {r: c.clamp(min=0) for r, c in codes.items()},
                          {r: c >= 0 for r, c in codes.items()}, owner=owner, n_utterances=n, primary=primary)
            outputs = self.model.forward_batch(batch)
            if exportable and owner is not None and type(self.model).utterance_logits is SERModule.utterance_logits:
                out = _mean_segment_logits(outputs["logits"].float(), owner, n)
            else:
                out = self.model.utterance_logits(batch, outputs).float()
            return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    return LogitsGraph().eval()


def _mean_segment_logits(logits: Any, owner: Any, n: Any) -> Any:
    """:func:`serray.models.layers.mean_segment_logits` (log of the mean softmax over each
    utterance's segments) as a product with the owner's one-hot matrix: the exporter
    converts no ``bincount`` of a dynamic length."""
    import torch

    probs = torch.softmax(logits, dim=1)
    onehot = (owner.unsqueeze(0) == torch.arange(n, device=owner.device).unsqueeze(1)).to(probs.dtype)  # [n, S]
    counts = onehot.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.log((onehot @ probs / counts).clamp(min=1e-12))


def _example(spec: list[dict[str, Any]], n: int, time: Sequence[int], seed: int) -> tuple[Any, ...]:
    """Random example tensors for :func:`graph_inputs` ``spec``: ``n`` utterances, frame counts cycling through ``time``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([time[i % len(time)] for i in range(n)], dtype=torch.int64)
    counts = torch.tensor([1 + i % 2 for i in range(n)], dtype=torch.int64)
    out = []
    for item in spec:
        fixed, kind = [int(s) for s in item["shape"] if isinstance(s, int)], item["kind"]
        if kind in ("lengths", "counts"):
            out.append((lengths if kind == "lengths" else counts).clone())
        elif kind == "codes":
            out.append(torch.tensor([(i % 2) - 1 for i in range(n)], dtype=torch.int64))  # -1 (unknown), 0
        elif kind == "segments":
            out.append(torch.randn(int(counts.sum()), *fixed, generator=g))
        elif kind == "frames":
            x = torch.randn(n, int(lengths.max()), *fixed, generator=g)
            out.append(x * (torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2))
        else:
            out.append(torch.randn(n, *fixed, generator=g))
    return tuple(out)


def _dynamic_shapes(spec: list[dict[str, Any]]) -> tuple[tuple[dict[int, Any], ...]]:
    """Every named axis of ``spec`` dynamic (for the graph's one ``*tensors`` argument)."""
    from torch.export import Dim

    return (tuple({axis: Dim.DYNAMIC for axis, name in enumerate(item["shape"]) if isinstance(name, str)} for item in spec),)


def _name_axes(path: Path, spec: list[dict[str, Any]]) -> None:
    """Rename the exporter's symbolic axes (``s0``, ...) in ``path`` to the names of ``spec`` (``batch``, ...)."""
    import onnx

    model = onnx.load(str(path))
    names: dict[str, str] = {}
    for value in model.graph.input:
        item = next((i for i in spec if i["name"] == value.name), None)
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if item is not None and dim.dim_param and isinstance(item["shape"][axis], str):
                names.setdefault(dim.dim_param, item["shape"][axis])
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    onnx.save(model, str(path))


def _reason(exc: BaseException) -> str:
    """One line: the exporter's root cause (its "Exception summary") or the exception's first line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("<class '")]
    line = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>", r"\1", causes[0]) if causes else (lines[0] if lines else "")
    line = f"{type(exc).__name__}: {line}"
    return line if len(line) <= 240 else line[:237] + "..."


def onnx_feeds(meta: Mapping[str, Any], packed: Mapping[str, Any], aux: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The graph's inputs (``onnx.json``'s ``inputs``) for ``N`` utterances.

    Args:
        meta: ``onnx.json`` of the member.
        packed: Role -> **normalised** :class:`~serray.training.packing.PackedFeatures`
            (:meth:`FoldModel.normalized <serray.artifacts.fold_model.FoldModel.normalized>`).
        aux: Role -> class codes of an auxiliary input (-1 unknown, the default).
    """
    feeds: dict[str, np.ndarray] = {}
    n = next(iter(packed.values())).n
    for item in meta["inputs"]:
        name, kind, p = item["name"], item["kind"], packed.get(item["role"])
        if kind == "codes":
            feeds[name] = np.asarray((aux or {}).get(item["role"], np.full(n, -1)), dtype=np.int64)
        elif kind in ("lengths", "counts"):
            feeds[name] = p.counts.astype(np.int64)
        elif kind == "frames":
            counts = p.counts
            x = np.zeros((p.n, int(counts.max(initial=1)), *p.data.shape[1:]), dtype=np.float32)
            for i in range(p.n):
                x[i, : counts[i]] = p.data[p.offsets[i] : p.offsets[i + 1]]
            feeds[name] = x
        else:
            feeds[name] = np.ascontiguousarray(p.data, dtype=np.float32)
    return feeds


def _normalisation(fm: FoldModel) -> dict[str, dict[str, Any]]:
    """Role -> how its input is normalised before the graph (and where the statistics are)."""
    out = {}
    for role, spec in fm.inputs.items():
        mode = spec["normalize"]
        stats = {"mean": f"arrays.npz:norm.{role}.mean", "std": f"arrays.npz:norm.{role}.std"} if mode == "global" else {}
        out[role] = {"mode": mode, **stats, "feature_set": spec.get("set"), "params": spec.get("params", {})}
    return out


class NotExportable(ValueError):
    """A member without an ONNX graph; the message is the one-line reason."""


def require_onnx() -> None:
    """Raise ``ValueError`` unless ``onnx``, ``onnxscript`` and ``onnxruntime`` are importable."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"--onnx needs {', '.join(missing)}: pip install 'serray[onnx]' (onnx, onnxscript, onnxruntime)")


def _export_graph(graph: Any, spec: list[dict[str, Any]], path: Path) -> None:
    """``graph`` exported to ``path`` (one file, weights inside), its axes named as in ``spec``."""
    example = _example(spec, 3, (48, 37, 29), seed=0)
    with _quiet_exporter():
        _export_program(graph, spec, example, path)
    _name_axes(path, spec)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's passes log every step at INFO and warn about what serray does not use: only errors pass."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_program(graph: Any, spec: list[dict[str, Any]], example: tuple[Any, ...], path: Path) -> None:
    """:func:`torch.export.export` (dynamic axes) then :func:`torch.onnx.export` of its program to ``path``.

    Raises:
        NotExportable: Either step fails (the step and the root cause).
    """
    import torch

    try:  # torch.export first: a model it cannot capture fails before the ONNX registry is built
        program = torch.export.export(graph, example, dynamic_shapes=_dynamic_shapes(spec), strict=False)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is this member's reason
        raise NotExportable(f"torch.export: {_reason(exc)}") from None
    try:
        onnx_program = torch.onnx.export(program, input_names=[i["name"] for i in spec], output_names=["logits"],
                                         dynamo=True, verbose=False)
        onnx_program.save(str(path), external_data=False)
    except Exception as exc:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise NotExportable(f"ONNX conversion: {_reason(exc)}") from None


def _check_graph(reference: Any, spec: list[dict[str, Any]], path: Path) -> tuple[list[dict[str, Any]], float]:
    """The graph's inputs (those of ``spec`` it kept) and its max abs difference from
    ``reference`` on 5 utterances of other lengths than the export's example.

    Raises:
        NotExportable: onnxruntime fails, or the logits differ by more than :data:`TOLERANCE`.
    """
    import onnxruntime
    import torch

    example = _example(spec, 5, (41, 24, 57, 30, 33), seed=1)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        got = session.run(["logits"], {i["name"]: t.numpy() for i, t in zip(spec, example) if i["name"] in names})[0]
    except Exception as exc:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise NotExportable(f"onnxruntime: {_reason(exc)}") from None
    try:
        with torch.no_grad():
            want = reference(*example).numpy()
    except Exception as exc:  # noqa: BLE001
        path.unlink(missing_ok=True)
        raise NotExportable(f"the torch model on the check's inputs: {_reason(exc)}") from None
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise NotExportable(f"the ONNX logits differ from torch's by {diff:.3g} (tolerance {TOLERANCE:g})")
    return [i for i in spec if i["name"] in names], diff


def export_member(folder: str | Path) -> dict[str, Any]:
    """Write ``model.onnx`` and ``onnx.json`` into the kept fold model ``folder``; returns ``onnx.json``.

    Raises:
        NotExportable: A scikit-learn member, or a graph the exporter or its check refuses (the reason).
    """
    import onnx
    import torch

    folder = Path(folder)
    fm = read_fold_model(folder)
    if fm.meta["backend"] != "torch":
        raise NotExportable(NOT_TORCH)
    model = fm._build()
    aux = tuple(getattr(model, "AUX_INPUTS", ()))
    spec = graph_inputs(fm.inputs, aux)
    names = [i["name"] for i in spec]
    if len(set(names)) != len(names):
        raise NotExportable(f"the graph's input names collide: {names}")
    _export_graph(_logits_graph(model, fm.inputs, aux), spec, folder / ONNX_FILE)
    spec, diff = _check_graph(_logits_graph(model, fm.inputs, aux, exportable=False), spec, folder / ONNX_FILE)
    opset = next((o.version for o in onnx.load(str(folder / ONNX_FILE)).opset_import if o.domain in ("", "ai.onnx")), None)
    meta = {
        "format": "serray-onnx", "format_version": 1, "file": ONNX_FILE, "model": fm.meta["model"], "opset": opset,
        "torch": torch.__version__, "inputs": spec, "normalize": _normalisation(fm),
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(fm.classes)],
                     "what": "utterance logits in the order of classes (softmax: probabilities)"}],
        "classes": fm.classes, "checked_max_abs_diff": diff,
    }
    (folder / ONNX_META).write_text(json.dumps(meta, indent=1))
    return meta


def export_onnx(out: str | Path, members: Sequence[str]) -> dict[str, Any]:
    """ONNX graphs of an export's members (paths relative to ``out``), before its checksums are taken.

    Returns:
        ``{"exported": {member: {"file", "meta", "inputs", "classes"}}, "not_exported": {member: reason}}``
        (paths relative to ``out``), for ``export.json`` and the model card.
    """
    require_onnx()
    exported, skipped = {}, {}
    for member in members:
        try:
            meta = export_member(Path(out) / member)
        except NotExportable as exc:
            skipped[member] = str(exc)
            log.warning("%s: no ONNX graph: %s", member, exc)
            continue
        exported[member] = {"file": f"{member}/{ONNX_FILE}", "meta": f"{member}/{ONNX_META}",
                            "inputs": [i["name"] for i in meta["inputs"]], "classes": meta["classes"]}
    log.info("ONNX graphs for %d of %d member(s)", len(exported), len(members))
    return {"exported": exported, "not_exported": skipped}


class OnnxFoldModel:
    """A kept fold model that scores with its ``model.onnx`` in onnxruntime (``serray.load(DIR, runtime="onnx")``).

    Inputs are normalised as the member records (:meth:`FoldModel.normalized
    <serray.artifacts.fold_model.FoldModel.normalized>`), fed in chunks of the config's
    ``eval_batch_size`` (:func:`onnx_feeds`), and the graph gives the utterance logits.

    Attributes:
        model: The kept fold model (its metadata, normalisation statistics).
        folder, meta, classes: Those of :attr:`model`.
        onnx: The member's ``onnx.json``.
    """

    def __init__(self, model: FoldModel) -> None:
        path = model.folder / ONNX_META
        if not (model.folder / ONNX_FILE).is_file() or not path.is_file():
            raise ArtifactError(f"{model.folder / ONNX_FILE}: missing; runtime='onnx' needs every member exported with "
                                f"serray export --onnx (export.json's onnx.not_exported says why a member has no graph)")
        self.model, self.folder, self.meta, self.classes = model, model.folder, model.meta, model.classes
        self.onnx = json.loads(path.read_text())
        self._session: Any = None

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        """As :attr:`FoldModel.inputs <serray.artifacts.fold_model.FoldModel.inputs>`."""
        return self.model.inputs

    @property
    def transductive(self) -> bool:
        """As :attr:`FoldModel.transductive <serray.artifacts.fold_model.FoldModel.transductive>`."""
        return self.model.transductive

    def logits(self, packed: Mapping[str, Any], *, speakers: Sequence[str] | None = None,
               aux: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Utterance logits ``[N, C]`` (float32) of raw features per input role, as :meth:`FoldModel.logits
        <serray.artifacts.fold_model.FoldModel.logits>` computes them, from the ONNX graph."""
        if self._session is None:
            require_onnx()
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(self.folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        norm = {role: self.model.normalized(role, packed[role], speakers) for role in self.inputs}
        n = next(iter(norm.values())).n
        size = int(self.meta["config"].get("eval_batch_size", 256))
        out = []
        for start in range(0, n, size):
            idx = np.arange(start, min(start + size, n))
            part = {role: p.take(idx) for role, p in norm.items()}
            codes = {role: np.asarray(c)[idx] for role, c in (aux or {}).items()}
            out.append(self._session.run(["logits"], onnx_feeds(self.onnx, part, codes))[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.classes)), dtype=np.float32)


def onnx_members(members: Sequence[FoldModel]) -> list[OnnxFoldModel]:
    """Every member as an :class:`OnnxFoldModel`.

    Raises:
        ArtifactError: A member without ``model.onnx`` (naming it).
    """
    return [OnnxFoldModel(m) for m in members]
