"""``serray predict`` and :func:`load`: score audio files with kept fold models or an export.

A :class:`Predictor` holds members (kept fold models, :mod:`serray.artifacts.fold_model`)
and a fusion rule (``logits``: the sum of the members' logits, the ensemble search's
default). :meth:`Predictor.predict` takes audio files, folders (every audio file under
them) or manifests (CSV or Parquet with a ``path`` column; ``utt_id``, ``speaker`` and
``domain`` are read when present), extracts every feature set the members record with
serray's extractors in this process (:class:`serray.features.workers.ExtractionWorker`:
the extraction path of the feature cache, with the recorded parameters), normalises each
input as its member was trained (``global``: the stored training statistics; ``speaker``:
each given speaker's own statistics over the scored files, only with a ``speaker``
column, and then marked ``transductive``; ``utterance``: each file's own frames), and
writes per-file class probabilities (softmax of the fused logits) and the label. Files
that cannot be read or are too short are listed with their reason; the rest are scored.

Example:
    >>> from serray.artifacts.predictor import AUDIO_SUFFIXES
    >>> ".wav" in AUDIO_SUFFIXES
    True
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from serray.artifacts.files import ArtifactError, check_files, refuse_code_files
from serray.artifacts.fold_model import MODEL_FILE, FoldModel, read_fold_model

__all__ = ["AUDIO_SUFFIXES", "EXPORT_FILE", "Predictor", "load", "resolve_inputs"]

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
#: The file that marks an export folder (members, fusion, checksums of every file).
EXPORT_FILE = "export.json"


def resolve_inputs(inputs: Iterable[str | Path] | pd.DataFrame) -> pd.DataFrame:
    """``utt_id, path[, speaker, domain]`` of audio files, folders (their audio files, sorted) and manifests.

    Raises:
        ValueError: An input that does not exist, a manifest without ``path``, or no audio at all.
    """
    if isinstance(inputs, pd.DataFrame):
        frames = [_manifest_rows(inputs, "the manifest")]
    else:
        frames = []
        for item in [inputs] if isinstance(inputs, (str, Path)) else inputs:
            p = Path(item)
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
                frames.append(pd.DataFrame({"path": [str(f) for f in files]}))
            elif p.suffix.lower() in (".csv", ".parquet"):
                if not p.is_file():
                    raise ValueError(f"manifest {p}: no such file")
                frames.append(_manifest_rows(pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p), str(p)))
            else:
                frames.append(pd.DataFrame({"path": [str(p)]}))  # a missing file is reported per file
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"path": []})
    if df.empty:
        raise ValueError("no audio to predict: give audio files, folders holding .wav/.flac files, or a manifest with a 'path' column")
    if "utt_id" not in df:
        df["utt_id"] = df["path"]
    df["utt_id"] = df["utt_id"].fillna(df["path"]).astype(str)
    return df.reset_index(drop=True)


def _manifest_rows(df: pd.DataFrame, source: str) -> pd.DataFrame:
    if "path" not in df.columns:
        raise ValueError(f"{source}: a manifest needs a 'path' column (optional: utt_id, speaker, domain); it has {list(df.columns)}")
    keep = [c for c in ("utt_id", "path", "speaker", "domain") if c in df.columns]
    return df[keep].astype({"path": str})


def _feature_key(spec: dict[str, Any]) -> str:
    return json.dumps({"set": spec["set"], "params": spec.get("params", {})}, sort_keys=True, default=str)


def _extract(key: str, rows: pd.DataFrame, progress: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One recorded feature set for every file: ``(utt_id -> array, utt_id -> failure reason)``."""
    from tqdm import tqdm

    from serray.features import get_extractor
    from serray.features.cache import LOAD_PARAMS
    from serray.features.workers import ExtractionWorker

    spec = json.loads(key)
    params = {k: v for k, v in spec["params"].items() if k not in LOAD_PARAMS}
    if spec["set"] == "ssl":
        raise ValueError("serray predict does not yet extract 'ssl' feature sets (their layer selection); "
                         "export a model trained on another feature set")
    dtype = get_extractor(spec["set"], **params).storage_dtype
    worker = ExtractionWorker(device="cpu")
    items = list(zip(rows["utt_id"], rows["path"]))
    found: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for start in tqdm(range(0, len(items), 16), desc=f"features {spec['set']}", unit="chunk", disable=not progress):
        for utt, path, arr, err, reason, _ in worker.run(spec["set"], params, items[start:start + 16]):
            if arr is None:
                failed[utt] = f"{err}: {reason}"
            else:
                found[utt] = np.asarray(arr).astype(dtype).astype(np.float32)
    return found, failed


def _packed(kind: str, ids: Sequence[str], arrays: dict[str, np.ndarray]) -> Any:
    from serray.training.packing import pack_features

    data = np.stack([arrays[u] for u in ids]) if kind == "vector" else [arrays[u] for u in ids]
    return pack_features(SimpleNamespace(kind=kind, utt_ids=list(ids), data=data))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Members (kept fold models) and the fusion of their logits (see the module docstring).

    Attributes:
        folder: Where it was loaded from.
        members: The loaded :class:`~serray.artifacts.fold_model.FoldModel` objects.
        fusion: ``"logits"`` (sum of the members' logits).
        classes: Class names in logit order (shared by every member).
    """

    def __init__(self, folder: Path, members: Sequence[FoldModel], fusion: str = "logits") -> None:
        if fusion != "logits":
            raise ArtifactError(f"{folder}: fusion {fusion!r} is not supported by predict; supported: ['logits']")
        if not members:
            raise ArtifactError(f"{folder}: no kept fold models (no {MODEL_FILE} under it)")
        classes = members[0].classes
        for m in members[1:]:
            if m.classes != classes:
                raise ArtifactError(f"{m.folder / MODEL_FILE}: classes {m.classes} differ from {classes} of the other members")
        self.folder, self.members, self.fusion, self.classes = Path(folder), list(members), fusion, list(classes)

    def fold(self, index: int) -> "Predictor":
        """The members kept from fold ``index`` only (each member's model of that fold): applied
        to that fold's test utterances they reproduce the stored (fused) test scores.

        Raises:
            ValueError: No member of that fold.
        """
        members = [m for m in self.members if int(m.meta["fold"]["index"]) == int(index)]
        if not members:
            have = sorted({int(m.meta["fold"]["index"]) for m in self.members})
            raise ValueError(f"{self.folder}: no kept model of fold {index}; folds: {have}")
        return Predictor(self.folder, members, self.fusion)

    @property
    def transductive(self) -> bool:
        """Whether some member standardises inputs with the scored speakers' own statistics."""
        return any(m.transductive for m in self.members)

    def logits(self, features: dict[str, dict[str, np.ndarray]], ids: Sequence[str], speakers: Sequence[str] | None,
               domains: Sequence[Any] | None) -> np.ndarray:
        """Fused logits ``[N, C]`` of utterances ``ids`` from their raw arrays per feature key."""
        total = np.zeros((len(ids), len(self.classes)), dtype=np.float64)
        for m in self.members:
            packed = {role: _packed(spec["kind"], ids, features[_feature_key(spec)]) for role, spec in m.inputs.items()}
            aux = {}
            names = list(m.meta.get("aux_names", {}).get("domain", []))
            if domains is not None and names:
                aux["domain"] = np.array([names.index(str(d)) if str(d) in names else -1 for d in domains], dtype=np.int64)
            total += m.logits(packed, speakers=speakers, aux=aux)
        return total

    def predict(self, inputs: Iterable[str | Path] | pd.DataFrame, *, progress: bool = False) -> pd.DataFrame:
        """One row per input file: ``utt_id, path, label, prob_<class>..., transductive, error``
        (``error`` empty where scored; the reason where the file could not be scored).

        Raises:
            ValueError: No inputs, or a member normalising per speaker without a ``speaker`` column.
        """
        rows = resolve_inputs(inputs)
        has_speakers = "speaker" in rows and rows["speaker"].notna().all()
        if not has_speakers and any(i["normalize"] == "speaker" for m in self.members for i in m.inputs.values()):
            raise ValueError(f"{self.folder}: its models normalise per speaker; give a manifest with a 'speaker' column "
                             f"(every file's speaker; the predictions are then transductive)")
        keys = sorted({_feature_key(spec) for m in self.members for spec in m.inputs.values()})
        features, failed = {}, {}
        for key in keys:
            features[key], bad = _extract(key, rows, progress)
            for utt, reason in bad.items():
                failed.setdefault(utt, reason)
        ok = rows[~rows["utt_id"].isin(list(failed))].reset_index(drop=True)
        out = ok[["utt_id", "path"]].copy()
        if len(ok):
            fused = self.logits(features, ok["utt_id"].tolist(), ok["speaker"].astype(str).tolist() if has_speakers else None,
                                ok["domain"].tolist() if "domain" in ok else None)
            probs = _softmax(fused)
            out["label"] = np.asarray(self.classes, dtype=object)[probs.argmax(axis=1)]
            for c, name in enumerate(self.classes):
                out[f"prob_{name}"] = probs[:, c]
        out["transductive"] = bool(self.transductive and has_speakers)
        out["error"] = ""
        bad_rows = rows[rows["utt_id"].isin(list(failed))][["utt_id", "path"]].copy()
        bad_rows["error"] = [failed[u] for u in bad_rows["utt_id"]]
        if len(bad_rows):
            log.warning("%d file(s) could not be scored, e.g. %s: %s", len(bad_rows), bad_rows["path"].iloc[0],
                        bad_rows["error"].iloc[0])
        return pd.concat([out, bad_rows], ignore_index=True)


def _export_members(folder: Path) -> tuple[list[Path], str]:
    """Member folders and fusion of an export (every listed file checked first)."""
    meta = json.loads((folder / EXPORT_FILE).read_text())
    check_files(folder, meta.get("files", {}))
    members = [folder / m for m in meta.get("members", [])]
    for m in members:
        if not (m / MODEL_FILE).is_file():
            raise ArtifactError(f"{m / MODEL_FILE}: member listed in {EXPORT_FILE} is missing; re-export")
    return members, str(meta.get("fusion", "logits"))


def load(folder: str | Path, *, runtime: str = "torch") -> Predictor:
    """A :class:`Predictor` of a run's kept-models folder (``W/models/<run>``: every fold model
    under it) or of an export folder (``serray export``; its checksums checked).

    ``runtime="onnx"``: the members score with the ``model.onnx`` of ``serray export --onnx``
    in onnxruntime (:class:`serray.artifacts.onnx_export.OnnxFoldModel`); the default
    ``"torch"`` with their kept weights (or estimator).

    Raises:
        ArtifactError: No such folder, no fold models, a missing member, a checksum
            mismatch or a file that would execute code, naming the file; with
            ``runtime="onnx"``, a member without ``model.onnx``.
        ValueError: An unknown ``runtime``.
    """
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"runtime must be one of ['torch', 'onnx'], got {runtime!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such folder; give a run's kept models (W/models/RUN) or a serray export folder")
    refuse_code_files(folder)
    if (folder / EXPORT_FILE).is_file():
        paths, fusion = _export_members(folder)
    else:
        paths, fusion = sorted(p.parent for p in folder.rglob(MODEL_FILE)), "logits"
    members = [read_fold_model(p) for p in paths]
    if runtime == "onnx":
        from serray.artifacts.onnx_export import onnx_members

        members = onnx_members(members)
    return Predictor(folder, members, fusion)
