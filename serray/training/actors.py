"""Fold actors: the folds of one configuration train in parallel Ray actors.

The packed features and the label table go to Ray's object store once
(:func:`put_inputs`); each :class:`FoldActor` receives the object references as
top-level constructor arguments, so Ray hands it a zero-copy read-only view, and builds
its own normalised fold data from them. The fold executor
(:mod:`serray.training.executor`) places and drives them: with an ``on_epoch`` callback
it calls ``step()`` on every actor with unfinished folds, waits for all of them, hands
the per-fold metrics of that epoch to the callback, and repeats until every fold has
stopped (lock-step). Without one, each actor trains its folds to the end in one
``run()`` call, and no actor waits for another between epochs. A tune trial
(:mod:`serray.tune.trainable`) calls ``run(n)`` for the epochs up to ASHA's next
decision, which needs one cross-fold number at that epoch.

Resources and packing: every fold is alive at once, and each actor is a
process with its own torch (about 0.5 GB before any data). So folds are packed onto as
many actors as fit: by default one actor per CPU of the cluster (at most one per fold),
sharing the CPUs (and GPUs, when the device is CUDA) evenly, on a cluster sized from its
nodes so that all of them fit at once (:func:`fold_resources`); with explicit ``num_cpus``
per actor, as many actors as fit into the nodes' CPUs. An actor hosting several folds
steps them one after another within each epoch. Each actor runs torch with
``max(1, floor(num_cpus))`` threads. On a 2-core laptop the 10 LOSO folds thus run in 2
actors of 5 folds; on a 16-core node in 10 actors of one fold each.

Example:
    >>> from types import SimpleNamespace as F
    >>> fold_groups([F(train=range(30), validation=range(5)) for _ in range(4)], 2)
    [[0, 2], [1, 3]]
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from serray.models.registry import ModelSpec
from serray.training.data import PackedFeatures, TrainingInputs
from serray.training.trainer import FoldResult, FoldTrainer, fold_trainer

__all__ = ["SharedInputs", "FoldActor", "put_inputs", "set_threads", "fold_actor_class", "fold_resources", "fold_groups"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharedInputs:
    """Object-store references to the packed features (per input role) and the label table."""

    features: dict[str, tuple[str, "ray.ObjectRef", "ray.ObjectRef | None"]]
    table: "ray.ObjectRef"
    n: int

    def resolve(self) -> TrainingInputs:
        """The inputs themselves (zero-copy read-only views of the object store)."""
        import ray

        packed = {role: PackedFeatures(kind, ray.get(d), None if o is None else ray.get(o)) for role, (kind, d, o) in self.features.items()}
        return TrainingInputs(packed, ray.get(self.table))


def put_inputs(inputs: TrainingInputs) -> SharedInputs:
    """Put the features and labels into the object store once (Ray must be running).

    Raises:
        RuntimeError: Ray is not initialised.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("Ray is not running; call serray.raycluster.start_ray() first")
    features = {
        role: (p.kind, ray.put(p.data), None if p.offsets is None else ray.put(p.offsets)) for role, p in inputs.packed.items()
    }
    return SharedInputs(features=features, table=ray.put(inputs.table), n=len(inputs.table.utt_ids))


def set_threads(num_threads: int) -> None:
    """Torch intra-op threads of this process (at least 1)."""
    import torch

    torch.set_num_threads(max(1, int(num_threads)))


class _FoldActorImpl:
    """Holds the trainers of one or more folds inside a Ray actor (see :class:`FoldActor`)."""

    def __init__(
        self,
        model: ModelSpec | str,
        config: Mapping[str, Any] | None,
        shared: SharedInputs,
        folds: Sequence[Any],
        normalize: str,
        seed: int,
        device: str,
        num_threads: int,
        ahead: int = 0,
    ) -> None:
        set_threads(num_threads)
        self._inputs = (shared.resolve(), list(folds), normalize, device)
        self.trainers: list[FoldTrainer] = []
        self._ahead: list[list[dict]] = []  # epochs trained before a trial asked for them
        self._ahead_key: tuple | None = None  # (model, config, seed) they were trained for
        if config is not None and ahead > 0:
            # in the constructor, so no method call from any caller can run before it
            self._train_ahead(model, config, seed, ahead)
        elif config is not None:  # else: a warm actor that waits for its first configuration
            self.reset(model, config, seed)

    def reset(self, model: ModelSpec | str, config: Mapping[str, Any], seed: int) -> int:
        """Start over with another configuration on the same folds (no new process).

        Used when Ray Tune reuses a trial's actors for the next trial. Trainers that
        the constructor's ``ahead`` built for this very configuration and seed, and that no
        trial has stepped yet, are kept with the epochs they trained.

        Returns:
            The number of epochs already trained (0 when the trainers are new).
        """
        if self._ahead_key is not None and self._ahead_key == _config_key(model, config, seed):
            self._ahead_key = None  # from now on these trainers belong to this trial
            return len(self._ahead)
        inputs, folds, normalize, device = self._inputs
        self._ahead, self._ahead_key = [], None
        self.trainers = [
            fold_trainer(model, config, inputs, fold, normalize=normalize, seed=seed, device=device) for fold in folds
        ]
        return 0

    def _train_ahead(self, model: ModelSpec | str, config: Mapping[str, Any], seed: int, epochs: int) -> None:
        """Build this configuration's trainers and train ``epochs`` epochs before any trial asks
        (the constructor's ``ahead``).

        The epochs' metrics wait for :meth:`step`; a :meth:`reset` to the same
        configuration and seed keeps them (any other rebuilds the trainers). A search
        uses this while Tune starts, for the first trial's configuration, which it
        knows in advance.
        """
        self.reset(model, config, seed)
        for _ in range(int(epochs)):
            self._ahead.append([t.step() for t in self.trainers])
        self._ahead_key = _config_key(model, config, seed)

    def step(self) -> list[dict]:
        """One epoch of every hosted fold (a stopped fold repeats its last metrics)."""
        self._ahead_key = None
        if self._ahead:
            return self._ahead.pop(0)
        return [t.step() for t in self.trainers]

    def run(self, epochs: int | None = None) -> list[list[dict]]:
        """Up to ``epochs`` epochs (``None``: until every hosted fold stopped) in one call.

        Each epoch is one :meth:`step`: the folds' random streams and results are those
        of as many separate steps. Ends after the epoch in which the last hosted fold
        stopped, so the list can be shorter than ``epochs``.

        Returns:
            One :meth:`step` result (a dict per hosted fold) per epoch run.
        """
        out: list[list[dict]] = []
        while epochs is None or len(out) < epochs:
            out.append(self.step())
            if all(m["stopped"] for m in out[-1]):
                break
        return out

    def checkpointable(self) -> bool:
        """Whether every hosted fold's trainer can save all of its training state."""
        return all(t.checkpointable for t in self.trainers)

    def save_state(self) -> list[tuple[bytes, str]]:
        """Every hosted fold's training state as ``(safetensors bytes, JSON text)``
        (:func:`serray.training.state.pack_state`; nothing is pickled)."""
        from serray.training.state import pack_state

        return [pack_state(t.state_dict()) for t in self.trainers]

    def load_state(self, states: Sequence[tuple[bytes, str]]) -> None:
        """Continue every hosted fold from :meth:`save_state` (epochs trained ahead are dropped)."""
        from serray.training.state import unpack_state

        if len(states) != len(self.trainers):
            raise ValueError(f"{len(states)} fold state(s) for an actor hosting {len(self.trainers)} fold(s)")
        self._ahead, self._ahead_key = [], None
        for trainer, (blob, text) in zip(self.trainers, states):
            trainer.load_state_dict(unpack_state(blob, text))

    def node_id(self) -> str:
        """The Ray node this actor runs on (recorded so results show where folds ran)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def finalize(self, keep: bool = False) -> list[FoldResult]:
        """Best-epoch logits of the validation and test parts of every hosted fold (and the
        trained models, ``FoldResult.kept``, when ``keep``)."""
        return [t.result(keep) for t in self.trainers]


def _config_key(model: ModelSpec | str, config: Mapping[str, Any], seed: int) -> tuple:
    """What epochs trained ahead are kept for: the model's name, the config and the seed."""
    return (model if isinstance(model, str) else model.name, dict(config), int(seed))


def __getattr__(name: str) -> Any:
    """``FoldActor``, the Ray actor class (made on first use: in-process training imports no Ray).

    Its constructor takes object references as top-level arguments.
    """
    if name == "FoldActor":
        return fold_actor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fold_actor_class() -> Any:
    """The Ray actor class of :class:`_FoldActorImpl` (made once, on first use)."""
    import ray

    if "FoldActor" not in globals():
        globals()["FoldActor"] = ray.remote(_FoldActorImpl)
    return globals()["FoldActor"]


def fold_resources(
    n_folds: int,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    device: str = "auto",
    folds_per_actor: int | None = None,
    custom: Mapping[str, float] | None = None,
) -> tuple[int, float, float]:
    """How many folds each actor hosts, and each actor's CPUs and GPUs.

    Default: one actor per CPU of the nodes (at most ``n_folds``), each sized from the
    nodes so that all of them fit at once (:func:`serray.raycluster.fold_size`): on one
    node its CPUs (and, unless ``device == "cpu"``, its GPUs) shared evenly; on a cluster
    never an actor larger than a node. With ``num_cpus`` (and/or ``num_gpus``) given: as
    many actors of that size as fit the nodes at once. ``custom`` (custom Ray resources
    of each actor): only the nodes that have them count.

    Returns:
        ``(folds_per_actor, num_cpus, num_gpus)``.

    Raises:
        ValueError: Negative resources, ``n_folds < 1``, or one actor larger than the
            whole cluster.
    """
    import ray

    from serray.raycluster import fold_nodes, fold_size, slots

    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if (num_cpus is not None and num_cpus < 0) or (num_gpus is not None and num_gpus < 0):
        raise ValueError(f"fold resources must be >= 0, got cpu={num_cpus}, gpu={num_gpus}")
    if folds_per_actor is not None and folds_per_actor < 1:
        raise ValueError(f"folds_per_actor must be >= 1, got {folds_per_actor}")
    nodes = fold_nodes(custom) if ray.is_initialized() else [{"CPU": 1.0}]
    cpus_total = sum(float(n.get("CPU", 0.0)) for n in nodes) or 1.0
    gpus_total = sum(float(n.get("GPU", 0.0)) for n in nodes)
    if num_cpus is not None and num_cpus > cpus_total + 1e-9:
        raise ValueError(f"one fold actor with cpu={num_cpus} exceeds the cluster's {cpus_total} CPUs")
    if num_gpus is not None and num_gpus > gpus_total + 1e-9:
        raise ValueError(f"one fold actor with gpu={num_gpus} exceeds the cluster's {gpus_total:g} GPUs")
    if folds_per_actor is None:
        fit = n_folds if num_cpus is not None or num_gpus is not None else max(1, int(cpus_total))
        fit = min(fit, slots(nodes, {"CPU": num_cpus or 0.0, "GPU": num_gpus or 0.0, **dict(custom or {})}))
        n_actors = max(1, min(n_folds, fit))
        folds_per_actor = math.ceil(n_folds / n_actors)
    n_actors = math.ceil(n_folds / folds_per_actor)
    cpus, gpus = fold_size(nodes, n_actors, num_cpus, num_gpus, custom, gpus=device != "cpu")
    return int(folds_per_actor), float(cpus), float(gpus)


def fold_groups(folds: Sequence[Any], per_actor: int) -> list[list[int]]:
    """Fold positions per actor: ``ceil(len(folds) / per_actor)`` actors of at most
    ``per_actor`` folds, balanced by each fold's work per epoch (3 x its training
    utterances, for the forward and backward passes, plus its validation utterances).

    Folds go heaviest first to the lightest actor with room (ties: the lower position),
    so the actors of a lock-step epoch or of a report finish close together: on EmoDB
    LOSO, consecutive groups of 5 held 1918 and 1841 training utterances. Which actor
    hosts a fold changes no number (each fold has its own seeded trainer).

    Example:
        >>> from types import SimpleNamespace as F
        >>> fold_groups([F(train=range(n), validation=range(10)) for n in (90, 50, 40, 60, 100)], 2)
        [[0, 2], [1, 3], [4]]
    """
    per_actor = max(1, int(per_actor))
    n_actors = max(1, math.ceil(len(folds) / per_actor))
    work = [3 * len(f.train) + len(f.validation) for f in folds]
    groups: list[list[int]] = [[] for _ in range(n_actors)]
    load = [0] * n_actors
    for pos in sorted(range(len(folds)), key=lambda p: (-work[p], p)):
        g = min((g for g in range(n_actors) if len(groups[g]) < per_actor), key=lambda g: (load[g], g))
        groups[g].append(pos)
        load[g] += work[pos]
    return sorted(sorted(g) for g in groups)
