"""Where feature extraction runs: the worker, and the pools that hold workers.

:class:`ExtractionWorker` extracts chunks of files with extractors it builds once.
:class:`PoolHolder` starts, on first use, one of three pools of such workers, all with
the same chunk interface (``map(name, params, chunks)`` yields one result list per
chunk): this process (``num_actors=0``), a local process pool (small local CPU work, at
most :data:`LOCAL_POOL_MAX_FILES` files: no Ray start), or Ray actors (two chunks in
flight per started actor). A chunk whose worker dies comes back as failures with a
reason, never as an exception, so the rest of the corpus is still extracted.
:mod:`serray.features.runner` drives them.

Example (in this process; a file that cannot be read is a failure for good, not an error)::

    >>> pools = PoolHolder(address=None, num_actors=0, gpus_per_actor=0.0)
    >>> pool = pools.get()
    >>> pool.where
    'this process'
    >>> [(key, error, for_good) for key, _path, array, error, _reason, for_good
    ...  in next(pool.map("mfcc", {}, [[("k1", "/nonexistent.wav")]]))]
    [('k1', 'AudioError', True)]
    >>> pools.close()
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from serray.audio import AudioError, load_audio
from serray.features.base import Extractor, FeatureError, extractor_class, get_extractor

__all__ = ["ExtractionWorker", "PoolHolder", "LOCAL_POOL_MAX_FILES", "Result"]

log = logging.getLogger(__name__)

#: One worker result per file: (file_key, path, array or None, error type, reason, persistent).
Result = tuple[str, str, "np.ndarray | None", "str | None", "str | None", bool]


class ExtractionWorker:
    """Extracts chunks of files; builds each extractor once (a Ray actor, or local).

    One worker serves every feature set of a :func:`serray.features.extract_features` call, so actors
    start once; each extractor (one openSMILE instance, one model copy) is built on its
    first chunk and kept.

    Args:
        device: Device to compute on; ``None`` picks CUDA when this process sees a GPU.
    """

    def __init__(self, device: str | None = None):
        self._device = device
        self._extractors: dict[str, Extractor] = {}
        self._errors: dict[str, Exception] = {}
        self._noise: dict[str, np.ndarray] = {}  # noise recordings of augmented copies, read once

    def ready(self) -> dict[str, Any]:
        """Where the worker runs."""
        import socket

        return {"host": socket.gethostname(), "pid": os.getpid()}

    def _get(self, name: str, params: Mapping[str, Any]) -> Extractor:
        ident = f"{name}:{sorted(params.items())!r}"
        if ident in self._errors:
            raise self._errors[ident]
        if ident not in self._extractors:
            try:
                ext = get_extractor(name, **params)
                ext.setup(self._device)
            except Exception as exc:
                self._errors[ident] = exc
                raise
            self._extractors[ident] = ext
        return self._extractors[ident]

    def run(self, name: str, params: Mapping[str, Any], items: Sequence[tuple]) -> list[Result]:
        """Load and extract ``(file_key, path)`` items with extractor ``name``; one result per item.

        An item ``(copy_key, path, draw)`` is an augmented copy: the audio is changed by
        :func:`serray.features.augment.apply_draw` with ``draw`` before extraction.
        """
        try:
            ext = self._get(name, params)
        except Exception as exc:
            reason = f"extractor failed to start: {type(exc).__name__}: {exc}"
            return [(k, p, None, "SetupError", reason, False) for k, p, *_ in items]
        results: list[Result | None] = [None] * len(items)
        audios, where = [], []
        for i, (key, path, *draw) in enumerate(items):
            try:
                audio = load_audio(path, sample_rate=ext.sample_rate)
                if draw:
                    from serray.features.augment import apply_draw

                    audio = apply_draw(audio, ext.sample_rate, draw[0], self._noise)
                audios.append(audio)
                where.append(i)
            except AudioError as exc:
                results[i] = (key, path, None, "AudioError", exc.reason, True)
            except Exception as exc:  # anything else reading the file is reported, not fatal
                results[i] = (key, path, None, type(exc).__name__, str(exc), False)
        outs = ext.extract_batch(audios) if audios else []
        for i, out in zip(where, outs):
            key, path = items[i][:2]
            if isinstance(out, Exception):
                persistent = isinstance(out, (AudioError, FeatureError))
                results[i] = (key, path, None, type(out).__name__, str(out) or repr(out), persistent)
            else:
                results[i] = (key, path, out, None, None, False)
        return results  # type: ignore[return-value]


#: Local jobs with at most this many files to extract use a process pool, not Ray
#: (EmoDB, EMOVO, RAVDESS, TESS fit; IEMOCAP and CREMA-D start Ray).
LOCAL_POOL_MAX_FILES = 5000

_POOL_WORKER: "ExtractionWorker | None" = None


def _pool_init() -> None:
    """Process-pool initializer: one torch thread (as a one-CPU Ray actor) and a worker."""
    global _POOL_WORKER
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _POOL_WORKER = ExtractionWorker("cpu")


def _pool_run(name: str, params: Mapping[str, Any], chunk: list[tuple[str, str]]) -> list[Result]:
    assert _POOL_WORKER is not None
    return _POOL_WORKER.run(name, params, chunk)


class _ProcessPool:
    """Chunks on a local process pool (``forkserver``: clean children, no inherited threads)."""

    def __init__(self, n_workers: int) -> None:
        import concurrent.futures
        import multiprocessing

        self.n_actors = n_workers
        self.where = f"{n_workers} local process(es) (small local job: no Ray; --ray uses Ray actors)"
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=n_workers, mp_context=multiprocessing.get_context("forkserver"), initializer=_pool_init,
        )

    def map(self, name: str, params: Mapping[str, Any], chunks: list[list[tuple[str, str]]]) -> Iterator[list[Result]]:
        import concurrent.futures

        futures = {self._executor.submit(_pool_run, name, params, chunk): chunk for chunk in chunks}
        for fut in concurrent.futures.as_completed(futures):
            chunk = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # a dead worker breaks the pool: its chunks fail, retried next run
                reason = f"worker failed: {type(exc).__name__}: {exc}"
                log.warning("%s: chunk of %d file(s) failed: %s", name, len(chunk), reason)
                yield [(k, p, None, "WorkerError", reason, False) for k, p, *_ in chunk]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class _LocalPool:
    """Runs chunks in this process."""

    n_actors = 0
    where = "this process"

    def __init__(self) -> None:
        self._worker = ExtractionWorker()

    def map(self, name: str, params: Mapping[str, Any], chunks: list[list[tuple[str, str]]]) -> Iterator[list[Result]]:
        cls = extractor_class(name)
        with _torch_threads(1 if cls.single_thread and "torch" in cls.libraries else None):
            for chunk in chunks:
                yield self._worker.run(name, params, chunk)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Limit torch to ``n`` intra-op threads inside the block (``None``: unchanged)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _RayPool:
    """A pool of :class:`ExtractionWorker` actors, two chunks in flight per started actor.

    Work goes only to actors that have started, so actors waiting for resources (more
    actors than free CPUs, or an autoscaling cluster still adding nodes) never hold chunks.
    """

    def __init__(self, n_actors: int, gpus_per_actor: float):
        import ray

        remote_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=1)(ExtractionWorker)
        self.actors = [remote_cls.remote() for _ in range(n_actors)]
        self._starting = {a.ready.remote(): a for a in self.actors}
        self._started: list[Any] = []
        self.n_actors = n_actors
        self.where = f"{n_actors} Ray actor(s)" + (f" with {gpus_per_actor:g} GPU each" if gpus_per_actor else "")

    def map(self, name: str, params: Mapping[str, Any], chunks: list[list[tuple[str, str]]]) -> Iterator[list[Result]]:
        import ray

        queue = collections.deque(chunks)
        pending: dict[Any, tuple[Any, list[tuple[str, str]]]] = {}

        def submit(actor: Any) -> None:
            if queue:
                chunk = queue.popleft()
                pending[actor.run.remote(name, params, chunk)] = (actor, chunk)

        for actor in self._started:  # two chunks in flight per actor: no idle gap between chunks
            submit(actor)
            submit(actor)
        while pending or (queue and self._starting):
            done, _ = ray.wait([*pending, *self._starting], num_returns=1, timeout=120)
            if not done:
                log.warning("%s: waiting for cluster resources to start %d actor(s)", name, len(self._starting))
                continue
            ref = done[0]
            if ref in self._starting:
                actor = self._starting.pop(ref)
                try:
                    log.debug("worker started: %s", ray.get(ref))
                except Exception as exc:  # the actor could not start; the others go on
                    log.warning("%s: a worker failed to start: %s", name, _cause(exc))
                    continue
                self._started.append(actor)
                submit(actor)
                submit(actor)
                continue
            actor, chunk = pending.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as exc:  # the worker crashed on this chunk; the rest goes on
                reason = f"worker failed: {_cause(exc)}"
                log.warning("%s: chunk of %d file(s) failed: %s", name, len(chunk), reason)
                yield [(k, p, None, "WorkerError", reason, False) for k, p, *_ in chunk]
            submit(actor)
        for chunk in queue:  # only when no actor could start
            yield [(k, p, None, "WorkerError", "no worker could start", False) for k, p, *_ in chunk]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def _cause(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def _default_actors(gpus_per_actor: float) -> int:
    """One actor per free CPU, or per ``gpus_per_actor`` of the free GPUs (all when none is free)."""
    import ray

    free, total = ray.available_resources(), ray.cluster_resources()
    if gpus_per_actor > 0:
        gpus = free.get("GPU", 0.0) or total.get("GPU", 0.0)
        return max(1, int(gpus // gpus_per_actor))
    return max(1, int(free.get("CPU", 0.0) or total.get("CPU", 1.0)))


class PoolHolder:
    """Creates the worker pool on first use (a run that finds everything cached starts no Ray)."""

    def __init__(self, address: str | None, num_actors: int | None, gpus_per_actor: float, use_ray: bool | None = None):
        self.address, self.num_actors, self.gpus_per_actor = address, num_actors, gpus_per_actor
        self.use_ray = use_ray
        self.pool: _LocalPool | _ProcessPool | _RayPool | None = None

    def _process_pool(self, n_files: int) -> bool:
        """A local process pool: never with a cluster address or GPUs; else as forced, or for small work."""
        if self.num_actors == 0 or self.address is not None or self.gpus_per_actor > 0:
            return False
        if self.use_ray is not None:
            return not self.use_ray
        import ray

        return n_files <= LOCAL_POOL_MAX_FILES and not ray.is_initialized()

    def get(self, n_files: int = LOCAL_POOL_MAX_FILES + 1) -> "_LocalPool | _ProcessPool | _RayPool":
        if self.pool is None:
            if self.num_actors == 0:
                self.pool = _LocalPool()
            elif self._process_pool(n_files):
                self.pool = _ProcessPool(self.num_actors or max(1, len(os.sched_getaffinity(0))))
            else:
                from serray.raycluster import start_ray
                from serray.training.resources import Resources

                start_ray(Resources(address=self.address))
                import ray

                total_gpus = ray.cluster_resources().get("GPU", 0.0)
                if self.gpus_per_actor > total_gpus:
                    raise ValueError(
                        f"gpus_per_actor={self.gpus_per_actor:g} but the Ray cluster has {total_gpus:g} GPU(s); "
                        "use 0 to extract on CPUs"
                    )
                n = self.num_actors or _default_actors(self.gpus_per_actor)
                self.pool = _RayPool(n, self.gpus_per_actor)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

