"""Loading cached features for a manifest, and listing the cached feature sets.

:func:`load_features` reads one feature set (see :mod:`serray.features.cache` for the
cache layout) for the utterances of a manifest, in manifest order; utterances without
features are listed, not fatal. For ``ssl`` it selects the stored layer(s).
:func:`list_cached` is one row per cached set of a work directory (``serray features --list``).

Example (a work directory where nothing is extracted yet)::

    >>> import tempfile, pandas as pd
    >>> w = tempfile.mkdtemp()
    >>> list_cached(w).columns.tolist()[:4], len(list_cached(w))
    (['set', 'key', 'params', 'kind'], 0)
    >>> manifest = pd.DataFrame({"utt_id": ["u1"], "path": ["/nonexistent.wav"]})
    >>> load_features(w, "mfcc", manifest)
    Traceback (most recent call last):
    ...
    serray.features.cache.FeaturesNotExtractedError: feature set 'mfcc' (defaults) is not extracted in ...; run `serray features ... --set mfcc`
"""

from __future__ import annotations

import logging
import os
import shlex
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from serray import io
from serray.features.base import Extractor, extractor_class, file_identity, get_extractor
from serray.features.cache import (
    LOAD_PARAMS,
    FeatureCache,
    FeatureSet,
    FeaturesNotExtractedError,
    _changed_params,
    _cli_value,
    _short_params,
    features_command_hint,
)
from serray.workdir import Workdir

__all__ = ["load_features", "list_cached", "select_layer"]

log = logging.getLogger(__name__)


def _cached_variants(workdir: str | os.PathLike, set_name: str) -> str:
    """A hint naming the parameters of every cached extraction of ``set_name`` ('' if none)."""
    root = Workdir(workdir).features_dir
    found = []
    for meta_path in sorted(root.glob(f"{set_name}-*/meta.json")) if root.is_dir() else []:
        try:
            changed = _changed_params(io.read_json(meta_path)["params"], extractor_class(set_name).defaults)
        except (OSError, ValueError, KeyError):
            continue
        args = " ".join(f"--feature-param {shlex.quote(f'{k}={_cli_value(v)}')}" for k, v in changed.items())
        found.append(args or "default parameters (no --feature-param)")
    if not found:
        return ""
    return f". Cached {set_name!r} extractions in {workdir}, for train/tune/seeds: " + "; ".join(found)


def _file_keys(paths: Iterable[str]) -> list[str | None]:
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(file_identity(p))
        except OSError:
            out.append(None)
    return out


def _split_params(name: str, params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    params = dict(params or {})
    load = {k: params.pop(k) for k in LOAD_PARAMS if k in params}
    return params, load


def select_layer(arr: np.ndarray, layer: Any, layers: Sequence[int], axis: int) -> np.ndarray:
    """Pick one stored layer (by hidden-state index or negative position), their mean, or all."""
    if layer == "mean":
        return arr.mean(axis=axis)
    if layer == "all":
        moved = np.moveaxis(arr, axis, -2)  # [..., L, H]
        return moved.reshape(*moved.shape[:-2], -1)
    layer = int(layer)
    if layer < 0:
        if -layer > len(layers):
            raise ValueError(f"layer {layer} is out of range: {len(layers)} layer(s) stored ({layers})")
        pos = len(layers) + layer
    else:
        if layer not in layers:
            raise ValueError(f"layer {layer} was not extracted; stored hidden-state indices: {layers}")
        pos = list(layers).index(layer)
    return np.take(arr, pos, axis=axis)


def _extractor_for(
    workdir: str | os.PathLike, set_name: str, manifest: pd.DataFrame, params: Mapping[str, Any] | None, layer: Any,
) -> tuple[Extractor, dict[str, Any], Any]:
    """``(extractor, extraction params, layer selection or None)`` of a load request.

    Raises:
        ValueError: A manifest without ``utt_id``/``path``, a load parameter for a set
            other than ``ssl``, or an unknown set or parameter.
    """
    missing_cols = [c for c in ("utt_id", "path") if c not in manifest.columns]
    if missing_cols:
        raise ValueError(f"manifest lacks column(s) {missing_cols}")
    extract_params, load_params = _split_params(set_name, params)
    if layer is not None:
        load_params["layer"] = layer
    if load_params and set_name != "ssl":
        raise ValueError(f"parameter(s) {sorted(load_params)} only apply to the 'ssl' feature set")
    try:
        ext = get_extractor(set_name, **extract_params)
    except ValueError as exc:  # e.g. ssl without a model
        raise ValueError(f"{exc}{_cached_variants(workdir, set_name)}") from None
    return ext, extract_params, (load_params.get("layer", -1) if set_name == "ssl" else None)


def _read_vectors(
    cache: FeatureCache, utt_ids: Sequence[str], keys: Sequence[str | None], dims: tuple[int, ...], sel: Any,
    stored_layers: Sequence[int] | None,
) -> tuple[list[str], list[str], np.ndarray, tuple[int, ...]]:
    """``(utt_ids with features, missing, data [N, ...] float32, per-sample shape)`` of a vector set."""
    index, values = cache.read_vectors()
    out_ids, missing, rows = [], [], []
    for u, k in zip(utt_ids, keys):
        if k is not None and k in index:
            out_ids.append(u)
            rows.append(index[k])
        else:
            missing.append(u)
    data = values[np.asarray(rows, dtype=np.int64)] if rows else np.zeros((0, int(np.prod(dims))), np.float32)
    data = data.reshape(len(rows), *dims)
    if sel is not None and len(dims) == 2:
        data = select_layer(data, sel, stored_layers or list(range(dims[0])), axis=1)
    data = np.ascontiguousarray(data, dtype=np.float32)
    return out_ids, missing, data, tuple(data.shape[1:])


def _read_arrays(
    cache: FeatureCache, utt_ids: Sequence[str], keys: Sequence[str | None], dims: tuple[int, ...], sel: Any,
    stored_layers: Sequence[int] | None, dtype: Any, mmap: bool,
) -> tuple[list[str], list[str], list[np.ndarray], tuple[int, ...]]:
    """``(utt_ids with features, missing, arrays, per-sample shape)`` of a sequence or segments set."""
    have = cache.cached_keys()
    out_ids, missing, data = [], [], []
    for u, k in zip(utt_ids, keys):
        if k is not None and k in have:
            arr = cache.read_array(k, mmap=mmap)
            if sel is not None and arr.ndim == 3:  # ssl frames [L, T, H]
                arr = select_layer(arr, sel, stored_layers or list(range(arr.shape[0])), axis=0)
            if dtype is not None and arr.dtype != dtype:
                arr = arr.astype(dtype)
            out_ids.append(u)
            data.append(arr)
        else:
            missing.append(u)
    if cache.kind == "segments":
        shape = tuple(data[0].shape[1:]) if data else dims
    else:
        shape = (data[0].shape[-1],) if data else dims[-1:]
    return out_ids, missing, data, shape


def _not_extracted(
    cache: FeatureCache, set_name: str, missing: Sequence[str], utt_ids: Sequence[str], keys: Sequence[str | None],
) -> list[str]:
    """The ``missing`` utterances an extraction run could still give features (warning about all missing)."""
    if not missing:
        return []
    log.warning(
        "%s: %d of %d utterances have no features (failed or not extracted), e.g. %s; see %s",
        set_name, len(missing), len(utt_ids), list(missing[:3]), cache.failures_path,
    )
    fail = cache.read_failures()
    for_good = set(fail.loc[fail["persistent"].astype(bool), "file_key"])
    key_of = dict(zip(utt_ids, keys))
    return [u for u in missing if key_of[u] is not None and key_of[u] not in for_good]


def load_features(
    workdir: str | os.PathLike,
    set_name: str,
    manifest: pd.DataFrame,
    *,
    params: Mapping[str, Any] | None = None,
    layer: int | str | None = None,
    dtype: Any = np.float32,
    mmap: bool = False,
) -> FeatureSet:
    """Load the cached features of ``manifest``'s utterances, in manifest order.

    Args:
        workdir: Work directory.
        set_name: Extractor name (``egemaps``, ``mfb``, ``spectrogram``, ``ssl``, ...).
        manifest: Manifest rows (``utt_id``, ``path``).
        params: The extraction parameters used (defaults for the rest). For ``ssl``,
            ``params["layer"]`` (or ``layer``) selects what is returned: a hidden-state
            index, a negative position among the stored layers (default ``-1``, the
            last), ``"mean"`` (mean over layers) or ``"all"`` (concatenated).
        layer: Same as ``params["layer"]``.
        dtype: dtype of the returned arrays (``None``: as stored, e.g. float16 for
            spectrogram segments).
        mmap: Memory-map sequence/segment arrays instead of reading them (only with
            ``dtype=None`` or the stored dtype; useful for sets larger than memory).

    Returns:
        A :class:`~serray.features.cache.FeatureSet`; utterances without features are listed in ``missing``.

    Raises:
        FeaturesNotExtractedError: The set was never extracted with these parameters, or
            none of the manifest's files has features; the message gives the command.
        ValueError: Unknown set or parameter, or a manifest without ``utt_id``/``path``.
    """
    ext, extract_params, sel = _extractor_for(workdir, set_name, manifest, params, layer)
    cache = FeatureCache(workdir, ext)
    hint = features_command_hint(workdir, set_name, extract_params)
    meta = cache.read_meta()
    if meta is None:
        raise FeaturesNotExtractedError(
            f"feature set {set_name!r} ({_short_params(ext.params, type(ext).defaults)}) is not extracted in {workdir} "
            f"(no {cache.dir}); run `{hint}`{_cached_variants(workdir, set_name)}"
        )
    utt_ids = manifest["utt_id"].astype(str).tolist()
    keys = _file_keys(manifest["path"].astype(str).tolist())
    dims = tuple(int(d) for d in meta["dims"])
    stored_layers = meta.get("layers")
    if ext.kind == "vector":
        out_ids, missing, data, shape = _read_vectors(cache, utt_ids, keys, dims, sel, stored_layers)
    else:
        out_ids, missing, data, shape = _read_arrays(cache, utt_ids, keys, dims, sel, stored_layers, dtype, mmap)
    if not out_ids:
        raise FeaturesNotExtractedError(
            f"feature set {set_name!r} in {cache.dir} has no features for any of the {len(utt_ids)} utterances of this "
            f"manifest (e.g. {manifest['path'].iloc[0]}); run `{hint}`"
        )
    names = meta.get("feature_names")
    if names is not None and (ext.kind == "segments" or len(names) != shape[-1]):
        names = None
    stacked = (len(stored_layers) if stored_layers else int(dims[0])) if sel == "all" else 1  # [L, ...] per utterance
    return FeatureSet(
        name=set_name, kind=ext.kind, utt_ids=out_ids, data=data, missing=missing, shape=shape,
        params=dict(ext.params), key=ext.key(), feature_names=names, meta=meta,
        not_extracted=_not_extracted(cache, set_name, missing, utt_ids, keys), layers=stacked,
    )


def list_cached(workdir: str | os.PathLike) -> pd.DataFrame:
    """One row per cached feature set in ``W/features``: set, key, params, kind, dims,
    n_utterances, n_copies (augmented copies), n_failed, size_mb, path (sets whose
    extractor is unknown are skipped)."""
    root = Workdir(workdir).features_dir
    rows = []
    for meta_path in sorted(root.glob("*/meta.json")) if root.is_dir() else []:
        try:
            meta = io.read_json(meta_path, "run `serray features` for its set, which re-extracts unreadable files")
            cls = extractor_class(meta["name"])
            ext = cls(**meta["params"])
        except (ValueError, KeyError) as exc:
            log.warning("%s: cannot read (%s); skipped", meta_path, exc)
            continue
        cache = FeatureCache(workdir, ext)
        cache.dir = meta_path.parent  # a folder written by other library versions keeps its own key
        row = cache.summary()
        row["key"] = meta.get("key", meta_path.parent.name.rsplit("-", 1)[-1])
        rows.append(row)
    cols = ["set", "key", "params", "kind", "dims", "n_utterances", "n_copies", "n_failed", "size_mb", "path"]
    return pd.DataFrame(rows, columns=cols)
