"""A fold trainer's training state as bytes that load without running code.

:meth:`TorchFoldTrainer.state_dict <serray.training.torch_trainer.TorchFoldTrainer.state_dict>`
returns ``(tensors, meta)``: every tensor of the state (weights, the best epoch's weights,
the optimiser's moments, the torch RNG state) and a JSON-able dict of the rest (epoch,
early stopping, stage, scheduler, history, the numpy RNG state). :func:`pack_state` turns
that into ``(safetensors bytes, JSON text)``, what a fold actor hands to a tune trial's
checkpoint (:mod:`serray.tune.checkpoint`), and :func:`unpack_state` reads it back:
safetensors and JSON only, never pickle.

Example:
    >>> import torch
    >>> blob, text = pack_state(({"w": torch.ones(2)}, {"version": STATE_VERSION, "epoch": 3, "loss": float("nan")}))
    >>> tensors, meta = unpack_state(blob, text)
    >>> tensors["w"].tolist(), meta["epoch"]
    ([1.0, 1.0], 3)
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

__all__ = ["STATE_VERSION", "pack_state", "unpack_state", "split_tensors", "join_tensors", "numpy_rng_state", "trainer_state",
           "load_trainer_state"]

#: Version of the ``meta`` layout (refused when it differs).
STATE_VERSION = 1


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists (for JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able in a trainer state: {type(value).__name__}")


def pack_state(state: tuple[Mapping[str, Any], Mapping[str, Any]]) -> tuple[bytes, str]:
    """``(safetensors bytes, JSON text)`` of a trainer's ``(tensors, meta)``."""
    from safetensors.torch import save

    tensors, meta = state
    blob = save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})
    return blob, json.dumps(dict(meta), default=_plain)


def unpack_state(blob: bytes, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(tensors, meta)`` of :func:`pack_state` (CPU tensors).

    Raises:
        ValueError: A state of another layout version.
    """
    from safetensors.torch import load

    meta = json.loads(text)
    if int(meta.get("version", -1)) != STATE_VERSION:
        raise ValueError(f"trainer state of layout version {meta.get('version')!r}, this serray reads {STATE_VERSION}; "
                         "start the trial afresh")
    return dict(load(blob)), meta


def split_tensors(prefix: str, tree: Any, tensors: dict[str, Any]) -> Any:
    """``tree`` (dicts and lists) with every tensor moved to ``tensors[<prefix>.<path>]`` and
    replaced by ``{"__tensor__": key}``; other leaves stay (they must be JSON-able)."""
    import torch

    if torch.is_tensor(tree):
        tensors[prefix] = tree
        return {"__tensor__": prefix}
    if isinstance(tree, Mapping):
        return {"__dict__": [[k, split_tensors(f"{prefix}.{k}", v, tensors)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return [split_tensors(f"{prefix}.{i}", v, tensors) for i, v in enumerate(tree)]
    return tree


def join_tensors(tree: Any, tensors: Mapping[str, Any]) -> Any:
    """The inverse of :func:`split_tensors` (dict keys keep their type: ints stay ints)."""
    if isinstance(tree, dict) and "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if isinstance(tree, dict) and "__dict__" in tree:
        return {k: join_tensors(v, tensors) for k, v in tree["__dict__"]}
    if isinstance(tree, list):
        return [join_tensors(v, tensors) for v in tree]
    return tree


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy generator's bit-generator state (JSON-able: Python ints of any size)."""
    return json.loads(json.dumps(rng.bit_generator.state, default=_plain))


def trainer_state(tr: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, meta)`` of a :class:`~serray.training.torch_trainer.TorchFoldTrainer` (its ``state_dict``)."""
    tensors: dict[str, Any] = {}
    rng = tr._rng_state
    if rng is not None:
        tensors["rng.torch"] = rng[0]
        if rng[1] is not None:
            tensors["rng.cuda"] = rng[1]
    meta = {
        "version": STATE_VERSION, "model": tr.spec.name, "seed": int(tr.seed), "fold": int(tr.data.index),
        "config": dict(tr.config), "epoch": int(tr._epoch), "best": tr._best, "stage": int(tr._stage),
        "stage_start": int(tr._stage_start), "stage_best": int(tr._stage_best), "stopped": bool(tr._stopped),
        "last": tr._last, "history": tr.history, "seconds": float(tr._seconds), "np_rng": numpy_rng_state(tr._np_rng),
        "model_state": split_tensors("model", tr.model.state_dict(), tensors),
        "best_state": None if tr._best_state is None else split_tensors("best", tr._best_state, tensors),
        "optimizer": split_tensors("optim", tr.optimizer.state_dict(), tensors),
        "scheduler": None if tr.scheduler is None else tr.scheduler.state_dict(),
    }
    return tensors, meta


def _load_optimizer(tr: Any, saved: Mapping[str, Any], old_lr: float) -> None:
    """The saved optimiser state; every group's hyperparameters but ``lr`` as this trainer's
    config made them, and ``lr`` scaled by ``config lr / old_lr`` (the same lr: unchanged)."""
    fresh = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in tr.optimizer.param_groups]
    tr.optimizer.load_state_dict(saved)
    ratio = float(tr.config["lr"]) / old_lr if old_lr else 1.0
    for group, hyper in zip(tr.optimizer.param_groups, fresh):
        group.update(hyper)
        if ratio != 1.0:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
    if tr.scheduler is not None and ratio != 1.0:
        tr.scheduler.base_lrs = [v * ratio for v in tr.scheduler.base_lrs]
        tr.scheduler._last_lr = [g["lr"] for g in tr.optimizer.param_groups]


def load_trainer_state(tr: Any, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Put :func:`trainer_state` into a trainer of the same model and fold (its ``load_state_dict``).

    Raises:
        ValueError: A state of another model or fold.
    """
    if meta["model"] != tr.spec.name or int(meta["fold"]) != int(tr.data.index):
        raise ValueError(f"trainer state of model {meta['model']!r} fold {meta['fold']} does not fit model "
                         f"{tr.spec.name!r} fold {tr.data.index}")
    stage = int(meta["stage"])
    if stage != tr._stage:
        if hasattr(tr.model, "begin_stage"):  # the model's own flags of that stage (its RNG use is replaced below)
            with tr._own_rng():
                tr.model.begin_stage(stage, tr.stages[stage])
        tr._stage = stage
        tr._configure_stage(stage)
    tr._stage_start, tr._stage_best = int(meta["stage_start"]), int(meta["stage_best"])
    tr.model.load_state_dict(join_tensors(meta["model_state"], tensors))
    best = meta["best_state"]
    tr._best_state = None if best is None else {k: v.to(tr.device) for k, v in join_tensors(best, tensors).items()}
    _load_optimizer(tr, join_tensors(meta["optimizer"], tensors), float(meta["config"].get("lr", 0.0)))
    if tr.scheduler is not None and meta["scheduler"] is not None:
        tr.scheduler.load_state_dict(dict(meta["scheduler"]))
        tr.scheduler.gamma = float(tr.config["lr_decay"])
    tr._epoch, tr._best, tr._stopped = int(meta["epoch"]), meta["best"], bool(meta["stopped"])
    tr._last, tr.history, tr._seconds = dict(meta["last"]), [dict(h) for h in meta["history"]], float(meta["seconds"])
    if "rng.torch" in tensors:
        cuda = tensors.get("rng.cuda") if tr.device.type == "cuda" else None
        tr._rng_state = (tensors["rng.torch"], cuda if cuda is not None else (tr._rng_state or (None, None))[1])
    tr._np_rng.bit_generator.state = dict(meta["np_rng"])
