"""``serray predict`` and :func:`load`: score audio files with kept fold models or an export.

A :class:`Predictor` holds members (kept fold models, :mod:`serray.artifacts.fold_model`)
and a fusion rule (``logits``: the sum of the members' logits, the ensemble search's
default). :meth:`Predictor.predict` takes audio files, folders (every audio file under
them) or manifests (CSV or Parquet with a ``path`` column; ``utt_id``, ``speaker`` and
``domain`` are read when present), extracts every feature set the members record with
serray's extractors and the recorded parameters (:class:`serray.features.workers.ExtractionWorker`,
the extraction path of the feature cache; for ``ssl`` the recorded model folder and
layer), normalises each input as its member was trained (``global``: the stored
training statistics; ``speaker``: each given speaker's own statistics over the scored
files, only with a ``speaker`` column, and then marked ``transductive``; ``utterance``:
each file's own frames), and writes per-file class probabilities (softmax of the fused
logits) and the label. Files that cannot be read, are too short or give non-finite
features are listed with their reason; the rest are scored.

Where extraction runs (:func:`extraction_pools`): at most :data:`IN_PROCESS_MAX_FILES`
files in this process; more on the feature actor pool of ``serray features``
(:class:`serray.features.workers.PoolHolder`: a local process pool up to its
``LOCAL_POOL_MAX_FILES``, a local Ray above); ``address`` joins a Ray cluster and
``use_ray=True`` starts a local Ray for any size. The workers are the same, so are the
predictions (tested). Scoring runs in batches of :data:`SCORE_BATCH` utterances (whole
speakers per batch when a member normalises per speaker).

Example:
    >>> from serray.artifacts.predictor import AUDIO_SUFFIXES
    >>> ".wav" in AUDIO_SUFFIXES
    True
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from serray.artifacts.files import ArtifactError, check_files, refuse_code_files
from serray.artifacts.fold_model import MODEL_FILE, FoldModel, read_fold_model

__all__ = ["AUDIO_SUFFIXES", "EXPORT_FILE", "IN_PROCESS_MAX_FILES", "SCORE_BATCH", "Predictor", "extraction_pools", "load",
           "resolve_inputs"]

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
#: The file that marks an export folder (members, fusion, checksums of every file).
EXPORT_FILE = "export.json"
#: Inputs of at most this many files are extracted in this process (a pool's start costs more).
IN_PROCESS_MAX_FILES = 100
#: Utterances scored at once (a member normalising per speaker gets whole speakers per batch).
SCORE_BATCH = 2048


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


def extraction_pools(n_files: int, *, address: str | None = None, use_ray: bool | None = None,
                     num_actors: int | None = None, gpus_per_actor: float = 0.0) -> Any:
    """The :class:`serray.features.workers.PoolHolder` that extracts ``n_files`` files.

    Without ``address``, ``use_ray``, ``num_actors`` or GPUs: this process for at most
    :data:`IN_PROCESS_MAX_FILES` files, else the pool ``serray features`` would pick (a
    local process pool for small work, Ray above). ``address`` joins a Ray cluster,
    ``use_ray=True`` starts a local Ray, ``use_ray=False`` never starts Ray,
    ``num_actors=0`` extracts in this process.

    Raises:
        ValueError: Negative counts or contradictory choices (one line naming both).
    """
    from serray.features.workers import PoolHolder

    if num_actors is not None and num_actors < 0:
        raise ValueError(f"num_actors (--num-actors) must be >= 0, got {num_actors}")
    if gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor (--gpus-per-actor) must be >= 0, got {gpus_per_actor}")
    pool_wanted = address is not None or bool(use_ray) or gpus_per_actor > 0
    if use_ray is False and pool_wanted:
        raise ValueError("use_ray=False (--no-ray) cannot join a cluster (--address) or reserve GPUs (--gpus-per-actor)")
    if num_actors == 0 and pool_wanted:
        raise ValueError("num_actors=0 (--num-actors 0: this process) cannot use Ray (--ray, --address) or reserve GPUs")
    if num_actors is None and not pool_wanted and n_files <= IN_PROCESS_MAX_FILES:
        num_actors = 0
    return PoolHolder(address, num_actors, gpus_per_actor, use_ray)


def _moved_models(recorded: Sequence[str], ssl_models: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, str]:
    """Recorded ``ssl`` model -> the folder to load it from (``ssl_models``: one folder for
    the one recorded model, or ``{recorded: folder}``).

    Raises:
        ValueError: A single folder for several recorded models, or a recorded name no member has.
    """
    if ssl_models is None:
        return {}
    if isinstance(ssl_models, (str, os.PathLike)):
        if len(recorded) != 1:
            raise ValueError(f"the members record {len(recorded)} ssl model(s) {list(recorded)}; "
                             "give --ssl-model RECORDED=FOLDER for each")
        return {recorded[0]: os.fspath(ssl_models)}
    unknown = sorted(set(ssl_models) - set(recorded))
    if unknown:
        raise ValueError(f"--ssl-model {unknown[0]}=...: no member records that ssl model; recorded: {list(recorded)}")
    return {str(k): os.fspath(v) for k, v in ssl_models.items()}


def _extraction(spec: Mapping[str, Any], moved: Mapping[str, str]) -> tuple[dict[str, Any], Any]:
    """``(extraction parameters, ssl layer selection or None)`` of a recorded feature set.

    Raises:
        ValueError: A local ssl model folder that does not exist (naming it and the fix).
    """
    from serray.features.cache import LOAD_PARAMS

    params = {k: v for k, v in spec.get("params", {}).items() if k not in LOAD_PARAMS}
    if spec["set"] != "ssl":
        return params, None
    recorded = str(params.get("model", ""))
    model = moved.get(recorded, recorded)
    looks_local = os.path.isabs(model) or model.startswith((".", "~"))
    if looks_local and not Path(model).expanduser().is_dir():
        where = "recorded by the members" if model == recorded else f"given for {recorded}"
        raise ValueError(f"ssl model folder {model} ({where}) does not exist; give the folder that holds this model now: "
                         f"serray predict ... --ssl-model {recorded}=FOLDER (Python: predict(..., ssl_models={{{recorded!r}: FOLDER}}))")
    params["model"] = model
    return params, spec.get("params", {}).get("layer", -1)


def _extract(key: str, rows: pd.DataFrame, pools: Any, moved: Mapping[str, str],
             progress: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One recorded feature set for every file: ``(utt_id -> array, utt_id -> failure reason)``.

    Each array is cast to the cache's storage dtype and back, and an ssl layer is picked,
    as :func:`serray.features.load_features` would give it.

    Raises:
        ValueError: The extractor could not start (e.g. an unloadable model).
    """
    from tqdm.auto import tqdm

    from serray.features import get_extractor
    from serray.features.loading import select_layer
    from serray.features.runner import default_chunk_size

    spec = json.loads(key)
    params, layer = _extraction(spec, moved)
    ext = get_extractor(spec["set"], **params)
    try:
        stored = ext.describe().get("layers") if layer is not None else None
    except (OSError, ValueError) as exc:  # the config of a model that cannot be read
        raise ValueError(f"feature set {spec['set']!r}: cannot read model {params.get('model')!r}: {exc}") from None
    items = [(u, os.path.abspath(p)) for u, p in zip(rows["utt_id"], rows["path"])]
    if ext.sort_by_length:  # similar lengths share a chunk (and a model batch)
        items.sort(key=lambda item: -os.path.getsize(item[1]) if os.path.isfile(item[1]) else 0)
    pool = pools.get(len(items))
    size = default_chunk_size(ext, len(items), pool.n_actors, chunks_per_actor=8)
    log.info("%s: extracting %d file(s) on %s", spec["set"], len(items), pool.where)
    found: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    with tqdm(total=len(items), desc=f"features {spec['set']}", unit="file", disable=not progress) as bar:
        for results in pool.map(spec["set"], params, [items[i:i + size] for i in range(0, len(items), size)]):
            for utt, _path, arr, err, reason, _ in results:
                if err == "SetupError":
                    raise ValueError(f"feature set {spec['set']!r}: {reason}")
                if arr is None:
                    failed[utt] = f"{err}: {reason}"
                    continue
                arr = np.asarray(arr).astype(ext.storage_dtype)
                arr = (select_layer(arr, layer, stored or list(range(arr.shape[0])), axis=0) if layer is not None
                       else arr).astype(np.float32)
                if np.isfinite(arr).all():
                    found[utt] = arr
                else:
                    failed[utt] = f"FeatureError: {spec['set']}: NaN or infinite feature values"
            bar.update(len(results))
    return found, failed


def _score_batches(n: int, speakers: Sequence[str] | None) -> list[np.ndarray]:
    """Index arrays of the utterances scored together: :data:`SCORE_BATCH` at a time, or
    with ``speakers`` whole speakers (batches of at least one speaker, else at most
    :data:`SCORE_BATCH`), so per-speaker statistics see every file of a speaker."""
    if speakers is None:
        return [np.arange(i, min(n, i + SCORE_BATCH)) for i in range(0, n, SCORE_BATCH)]
    codes, _ = pd.factorize(pd.Series(list(speakers), dtype=str))
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    batches: list[np.ndarray] = []
    current: list[np.ndarray] = []
    for g in groups:
        if current and sum(map(len, current)) + len(g) > SCORE_BATCH:
            batches.append(np.sort(np.concatenate(current)))
            current = []
        current.append(g)
    if current:
        batches.append(np.sort(np.concatenate(current)))
    return batches


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

    def predict(self, inputs: Iterable[str | Path] | pd.DataFrame, *, progress: bool = False, address: str | None = None,
                use_ray: bool | None = None, num_actors: int | None = None, gpus_per_actor: float = 0.0,
                ssl_models: str | os.PathLike | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """One row per input file: ``utt_id, path, label, prob_<class>..., transductive, error``
        (``error`` empty where scored; the reason where the file could not be scored).

        Args:
            inputs: Audio files, folders, manifests (see :func:`resolve_inputs`).
            progress: A progress bar per feature set.
            address, use_ray, num_actors, gpus_per_actor: Where extraction runs
                (:func:`extraction_pools`; by default this process for small inputs).
            ssl_models: Where the members' ``ssl`` model lives now when its recorded
                folder moved: a folder (one recorded model) or ``{recorded: folder}``.

        Raises:
            ValueError: No inputs, a member normalising per speaker without a ``speaker``
                column, bad pool choices, a missing ssl model folder or an extractor that
                cannot start.
        """
        rows = resolve_inputs(inputs)
        has_speakers = "speaker" in rows and rows["speaker"].notna().all()
        if not has_speakers and self._per_speaker:
            raise ValueError(f"{self.folder}: its models normalise per speaker; give a manifest with a 'speaker' column "
                             f"(every file's speaker; the predictions are then transductive)")
        specs = {_feature_key(spec): spec for m in self.members for spec in m.inputs.values()}
        recorded = sorted({str(s.get("params", {}).get("model", "")) for s in specs.values() if s["set"] == "ssl"})
        moved = _moved_models(recorded, ssl_models)
        for spec in specs.values():  # every model folder checked before any extraction
            _extraction(spec, moved)
        pools = extraction_pools(len(rows), address=address, use_ray=use_ray, num_actors=num_actors,
                                 gpus_per_actor=gpus_per_actor)
        features: dict[str, dict[str, np.ndarray]] = {}
        failed: dict[str, str] = {}
        try:
            for key in sorted(specs):
                features[key], bad = _extract(key, rows, pools, moved, progress)
                for utt, reason in bad.items():
                    failed.setdefault(utt, reason)
        finally:
            pools.close()
        return self._table(rows, features, failed, has_speakers)

    @property
    def _per_speaker(self) -> bool:
        """Whether some member normalises an input per speaker."""
        return any(i["normalize"] == "speaker" for m in self.members for i in m.inputs.values())

    def _table(self, rows: pd.DataFrame, features: dict[str, dict[str, np.ndarray]], failed: Mapping[str, str],
               has_speakers: bool) -> pd.DataFrame:
        """The prediction table: scored rows (input order; scored in batches), then the failed ones."""
        ok = rows[~rows["utt_id"].isin(list(failed))].reset_index(drop=True)
        out = ok[["utt_id", "path"]].copy()
        if len(ok):
            ids = ok["utt_id"].tolist()
            speakers = ok["speaker"].astype(str).tolist() if has_speakers else None
            domains = ok["domain"].tolist() if "domain" in ok else None
            fused = np.zeros((len(ok), len(self.classes)), dtype=np.float64)
            for idx in _score_batches(len(ok), speakers if self._per_speaker else None):
                fused[idx] = self.logits(features, [ids[i] for i in idx],
                                         None if speakers is None else [speakers[i] for i in idx],
                                         None if domains is None else [domains[i] for i in idx])
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
