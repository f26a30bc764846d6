"""Extractor base class, the extractor registry and the audio file identity.

An extractor is a small class with explicit parameters. Everything that changes its
numbers (its name, its parameters, the versions of the libraries that compute them and
a per-extractor code version) goes into :meth:`Extractor.key`, which names its cache
folder. Options that never change the numbers (batch size, device) are kept apart in
:attr:`Extractor.options` and are not hashed.

Heavy libraries (openSMILE, torch, transformers) are imported in :meth:`Extractor.setup`,
so building an extractor to compute its key is cheap.

Example:
    >>> from serray.features import get_extractor
    >>> ext = get_extractor("mfb", n_mels=40)
    >>> ext.kind, ext.sample_rate, len(ext.key())
    ('sequence', 16000, 12)
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence

import numpy as np

__all__ = [
    "Kind",
    "KINDS",
    "Extractor",
    "FeatureError",
    "register",
    "extractor_names",
    "get_extractor",
    "extractor_class",
    "file_identity",
    "library_versions",
    "folder_fingerprint",
]

log = logging.getLogger(__name__)

Kind = Literal["vector", "sequence", "segments"]
KINDS: tuple[str, ...] = ("vector", "sequence", "segments")

# Modules that register extractors at import time; imported on first registry lookup.
_EXTRACTOR_MODULES: tuple[str, ...] = (
    "serray.features.opensmile_ext",
    "serray.features.spectral",
    "serray.features.ssl",
    "serray.features.waveform",
)
_REGISTRY: dict[str, type["Extractor"]] = {}


class FeatureError(ValueError):
    """An extractor cannot produce features for this input (deterministic, not retried)."""


def library_versions(*dists: str) -> dict[str, str]:
    """Installed versions of the named distributions (``"absent"`` when not installed)."""
    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "absent"
    return out


def file_identity(path: str | os.PathLike) -> str:
    """Identity of an audio file: hash of its absolute path, size and modification time.

    A changed, replaced or touched file gets a new identity, so its cached features are
    recomputed; an unchanged file keeps its identity across runs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    p = os.path.abspath(os.fspath(path))
    st = os.stat(p)
    return hashlib.sha1(f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert ``value`` (possibly a CLI string) to the type of ``default``."""
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"parameter {name!r} must be true/false, got {value!r}")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"parameter {name!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (list, tuple)):
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        elem = type(default[0]) if default else float
        return [_coerce(name, v, elem()) for v in value]
    if isinstance(default, str):
        return str(value)
    return value


class Extractor(abc.ABC):
    """One feature set: explicit hashed parameters, lazy resources, ``extract(audio)``.

    Subclasses set :attr:`name`, :attr:`kind` (or override :meth:`_kind`),
    :attr:`defaults` (hashed parameters, always including ``sample_rate``), optionally
    :attr:`option_defaults` (not hashed), :attr:`libraries` (distributions whose version
    changes the numbers) and :attr:`code_version` (bump when the implementation changes
    the numbers), and implement :meth:`_setup` and :meth:`_extract`.

    Attributes:
        params: The hashed parameters (defaults merged with the given ones).
        options: Runtime options that do not change the numbers.
    """

    name: ClassVar[str] = ""
    kind: Kind = "vector"
    defaults: ClassVar[Mapping[str, Any]] = {"sample_rate": 16000}
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    libraries: ClassVar[tuple[str, ...]] = ("numpy",)
    code_version: ClassVar[int] = 1
    #: dtype the cache stores this extractor's arrays in.
    storage_dtype: str = "float32"
    #: Whether the runner should send files of similar length together (batched models).
    sort_by_length: ClassVar[bool] = False
    #: Smallest useful number of files per work chunk (batched extractors want batches).
    min_chunk: ClassVar[int] = 1
    #: Per-utterance work is too small for intra-op threads: in-process runs use one
    #: torch thread (actors always do; parallelism comes from the actor pool).
    single_thread: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults) - set(self.option_defaults))
        if unknown:
            allowed = sorted([*self.defaults, *self.option_defaults])
            raise ValueError(f"extractor {self.name!r} has no parameter(s) {unknown}; accepted: {allowed}")
        self.params: dict[str, Any] = {}
        for k, d in self.defaults.items():
            v = params.get(k, d)
            self.params[k] = self._coerce_param(k, v, d)
        self.options: dict[str, Any] = {
            k: (self._coerce_param(k, params[k], d) if k in params and d is not None else params.get(k, d))
            for k, d in self.option_defaults.items()
        }
        if self.params.get("sample_rate", 1) <= 0:
            raise ValueError(f"extractor {self.name!r}: sample_rate must be positive, got {self.params['sample_rate']}")
        self._validate()
        self.kind = self._kind()
        self._device: str | None = None
        self._ready = False

    # ------------------------------------------------------------------ description

    def _coerce_param(self, name: str, value: Any, default: Any) -> Any:
        return _coerce(name, value, default)

    def _validate(self) -> None:
        """Check parameter values; raise ``ValueError`` naming the parameter."""

    def _kind(self) -> Kind:
        return type(self).kind

    @property
    def sample_rate(self) -> int:
        """Sample rate the audio is loaded at."""
        return int(self.params["sample_rate"])

    def versions(self) -> dict[str, str]:
        """Versions of everything that changes the numbers (hashed into :meth:`key`)."""
        v = library_versions("soxr", *self.libraries)
        v[f"serray.features.{self.name}"] = str(self.code_version)
        return v

    def key(self) -> str:
        """12-hex-digit hash of name, parameters and versions; names the cache folder."""
        blob = json.dumps({"name": self.name, "params": self.params, "versions": self.versions()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        """Extra facts for the cache's ``meta.json`` (e.g. feature names, layer indices)."""
        return {}

    def feature_names(self) -> list[str] | None:
        """Names of the feature dimensions, when the extractor has them."""
        return None

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({ps})"

    # ------------------------------------------------------------------ computation

    @property
    def device(self) -> str:
        """Device the extractor computes on (``cpu`` or ``cuda[:i]``); set by :meth:`setup`."""
        return self._device or "cpu"

    def setup(self, device: str | None = None) -> None:
        """Load libraries, models and constants once; idempotent.

        Args:
            device: ``"cpu"``, ``"cuda"``/``"cuda:i"``, or ``None`` for the
                ``device`` option, else CUDA when torch sees a GPU, else CPU.
        """
        if self._ready:
            return
        self._device = device or self.options.get("device") or ("cpu" if "torch" not in self.libraries else _default_device())
        self._setup()
        self._ready = True

    def _setup(self) -> None:
        """Subclass hook for :meth:`setup`."""

    @abc.abstractmethod
    def _extract(self, audio: np.ndarray) -> np.ndarray:
        """Features of one mono float32 signal at :attr:`sample_rate`."""

    def extract(self, audio: np.ndarray) -> np.ndarray:
        """Features of one utterance.

        Args:
            audio: Mono float32 samples at :attr:`sample_rate` (as
                :func:`serray.audio.load_audio` returns them).

        Returns:
            ``[D]`` for ``vector``, ``[T, D]`` for ``sequence``, ``[S, C, F, T]`` for
            ``segments`` (SSL: ``[L, H]`` / ``[L, T, H]``, see :mod:`serray.features.ssl`).

        Raises:
            ValueError: ``audio`` is not a non-empty 1-D array.
            FeatureError: The result is empty or not finite.
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"{self.name}: audio must be a non-empty 1-D array, got shape {audio.shape}")
        self.setup()
        return self._check(self._extract(audio))

    def extract_batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray | Exception]:
        """Features of several utterances; a failing one gives its exception in its place.

        The default loops over :meth:`extract`; batched extractors (SSL) override it.
        """
        out: list[np.ndarray | Exception] = []
        for a in audios:
            try:
                out.append(self.extract(a))
            except Exception as exc:  # reported per file by the runner
                out.append(exc)
        return out

    def _check(self, arr: np.ndarray) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.size == 0:
            raise FeatureError(f"{self.name}: extractor returned no values (shape {arr.shape})")
        if not np.isfinite(arr).all():
            raise FeatureError(f"{self.name}: extractor returned NaN or infinite values")
        return arr


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator adding an extractor to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if "sample_rate" not in cls.defaults:
        raise ValueError(f"{cls.__name__}.defaults must include sample_rate")
    _REGISTRY[cls.name] = cls
    return cls


def _load_registry() -> None:
    for mod in _EXTRACTOR_MODULES:
        importlib.import_module(mod)


def extractor_names() -> list[str]:
    """Names of the registered extractors, sorted."""
    _load_registry()
    return sorted(_REGISTRY)


def extractor_class(name: str) -> type[Extractor]:
    """The extractor class registered as ``name``.

    Raises:
        ValueError: Unknown name (the message lists the known ones).
    """
    _load_registry()
    if name not in _REGISTRY:
        raise ValueError(f"unknown feature set {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_extractor(name: str, **params: Any) -> Extractor:
    """Build the extractor ``name`` with ``params`` (unknown names/params raise ``ValueError``)."""
    return extractor_class(name)(**params)


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """Hash of the relative names, sizes and modification times of a folder's files."""
    root = Path(folder)
    items = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            items.append(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
