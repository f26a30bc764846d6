"""Where and with what a command's work runs: one :class:`Resources` for every driver.

The execution settings of ``serray train``, ``seeds``, ``tune`` (plain and nested),
``crosscorpus``, ``ensemble`` and ``demo`` travel as one frozen object: the Ray cluster
to join, the torch device, the CPUs, GPUs and custom Ray resources of each fold actor (or
fold task), how many folds an actor hosts, whether folds train on Ray or in this process,
and how many CPUs a local Ray gets. None of them changes a number a run produces; they are kept out of
:class:`~serray.training.spec.RunSpec`, which says *what* is trained.

:meth:`Resources.start_ray` is the one way a driver starts or joins Ray
(:func:`serray.raycluster.start_ray`): a fold request no node can hold is refused with
one line, against this machine before a local Ray starts and against every node of a
joined cluster once it is joined.

Example:
    >>> res = Resources(fold_cpus=2, folds_per_actor=1, device="cpu")
    >>> res.request()
    {'cpu': 2.0, 'gpu': 0.0}
    >>> res.replace(parallel=False).parallel
    False
    >>> Resources(device="tpu")
    Traceback (most recent call last):
    ...
    ValueError: device must be one of auto, cpu, cuda, got 'tpu'
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Resources", "DEVICES", "RESOURCE_NAME", "RAY_BUILTIN"]

#: Torch devices a run may ask for (``auto``: CUDA when the process sees a GPU).
DEVICES = ("auto", "cpu", "cuda")


def _number(name: str, value: Any, low: float, integer: bool = False) -> None:
    """Refuse ``value`` unless it is ``None`` or a number (an integer when ``integer``) >= ``low``."""
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} >= {low:g} or None, got {value!r}")


#: A Ray resource name as ``--fold-resources`` and :attr:`Resources.fold_custom` take it.
RESOURCE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
#: Ray's own resources, which are not asked for by name (``num_cpus``, ``num_gpus``, ``memory``).
RAY_BUILTIN = ("cpu", "gpu", "memory", "object_store_memory")


def _custom(value: Any) -> dict[str, float]:
    """``fold_custom`` as a plain ``{name: amount}`` (amounts as floats), checked.

    Raises:
        ValueError: A name that is not a Ray resource name or is one of Ray's own
            (:data:`RAY_BUILTIN`), or an amount that is not a number > 0.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"fold_custom must be a mapping of Ray resource names to amounts > 0, got {value!r}")
    out: dict[str, float] = {}
    for key, amount in value.items():
        if not isinstance(key, str) or not RESOURCE_NAME.fullmatch(key) or key.lower() in RAY_BUILTIN:
            raise ValueError(f"fold_custom names custom Ray resources (letters, digits, _ - : .), not {key!r}; "
                             "use fold_cpus / fold_gpus for CPUs and GPUs")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < math.inf:
            raise ValueError(f"fold_custom[{key!r}] must be a number > 0, got {amount!r}")
        out[key] = float(amount)
    return out


@dataclass(frozen=True)
class Resources:
    """A command's execution settings (see the module docstring).

    Attributes:
        address: Ray cluster to join (``"auto"`` or ``"HOST:PORT"``); ``None`` starts
            (or reuses) a local Ray.
        device: Torch device of every fold, one of :data:`DEVICES`.
        fold_cpus: CPUs of each fold actor (``serray train``, a tune trial) or fold task
            (``serray seeds``, a nested search's outer fold); ``None``: the driver's
            default (train and tune: the cluster's CPUs shared evenly; seeds and nested
            search: 1).
        fold_gpus: GPUs of each fold actor or task; ``None``: the driver's default
            (an even share when the device is not ``cpu``; seeds and nested: 0).
        folds_per_actor: Folds hosted by each fold actor (default: as needed to fit).
        parallel: Folds on Ray (``True``) or in this process (``False``); ``None``: the
            driver decides (:func:`serray.training.executor.choose_execution`).
        num_cpus: CPUs of a local Ray (default: all this process may use; ignored when
            joining a cluster); the ensemble search also runs at most this many tasks.
        fold_custom: Custom Ray resources every fold actor, fold task and tune-trial
            bundle asks for besides its CPUs and GPUs (``--fold-resources
            cpu=1,spot=0.01``), e.g. ``{"spot": 0.01}`` pins the folds to nodes started
            with ``--resources '{"spot": 1}'``; names as Ray spells them (letters,
            digits, ``_ - : .``), amounts > 0. Only Ray can place such work, so a
            ``parallel`` of ``None`` becomes ``True`` and ``False`` is refused.
    """

    address: str | None = None
    device: str = "auto"
    fold_cpus: float | None = None
    fold_gpus: float | None = None
    folds_per_actor: int | None = None
    parallel: bool | None = None
    num_cpus: int | None = None
    fold_custom: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse settings no driver can run, naming the field and the valid choices.

        Raises:
            ValueError: An unknown device, negative or non-numeric resources, fewer than
                one fold per actor or local CPU, an empty address, a non-bool ``parallel``,
                or a bad ``fold_custom`` (a name that is not a custom Ray resource, an
                amount not > 0, or ``parallel=False`` with one).
        """
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _number("fold_cpus (--fold-resources cpu=)", self.fold_cpus, 0)
        _number("fold_gpus (--fold-resources gpu=)", self.fold_gpus, 0)
        _number("folds_per_actor (--folds-per-actor)", self.folds_per_actor, 1, integer=True)
        _number("num_cpus (--num-cpus)", self.num_cpus, 1, integer=True)
        object.__setattr__(self, "fold_custom", _custom(self.fold_custom))
        if self.parallel not in (None, True, False):
            raise ValueError(f"parallel must be True, False or None (the driver decides), got {self.parallel!r}")
        if self.fold_custom and self.parallel is False:
            raise ValueError(f"fold_custom {self.fold_custom} asks Ray for custom resources, but parallel=False "
                             "(--sequential) trains in this process; drop one of them")
        if self.fold_custom:
            object.__setattr__(self, "parallel", True)  # only Ray places work on the nodes that have them
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(f"address must be 'auto', 'HOST:PORT' or None (a local Ray), got {self.address!r}")

    def replace(self, **changes: Any) -> "Resources":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_defaults(self, fold_cpus: float | None = None, fold_gpus: float | None = None) -> "Resources":
        """A copy whose unset ``fold_cpus``/``fold_gpus`` take these defaults (a driver's own).

        Example:
            >>> Resources(fold_gpus=0.5).with_defaults(fold_cpus=1.0, fold_gpus=0.0).request()
            {'cpu': 1.0, 'gpu': 0.5}
        """
        return self.replace(fold_cpus=self.fold_cpus if self.fold_cpus is not None else fold_cpus,
                            fold_gpus=self.fold_gpus if self.fold_gpus is not None else fold_gpus)

    def request(self) -> dict[str, float]:
        """Each fold actor's or task's request, ``{"cpu": c, "gpu": g}`` (0 where unset)."""
        return {"cpu": float(self.fold_cpus or 0.0), "gpu": float(self.fold_gpus or 0.0)}

    def ray_request(self) -> dict[str, float]:
        """:meth:`request` with the custom resources, as the node check reads it
        (:func:`serray.raycluster.check_request`).

        Example:
            >>> Resources(fold_cpus=1, fold_custom={"spot": 0.01}).ray_request()
            {'cpu': 1.0, 'gpu': 0.0, 'spot': 0.01}
        """
        return {**self.request(), **self.fold_custom}

    def fold_record(self) -> dict[str, Any]:
        """The fold resources as a run record stores them (``num_cpus``, ``num_gpus``,
        ``folds_per_actor``, and ``custom`` when any are asked for)."""
        record: dict[str, Any] = {"num_cpus": self.fold_cpus, "num_gpus": self.fold_gpus,
                                  "folds_per_actor": self.folds_per_actor}
        if self.fold_custom:
            record["custom"] = dict(self.fold_custom)
        return record

    def check(self) -> None:
        """Refuse a fold request this machine cannot hold, before anything starts (a joined
        cluster is checked by :meth:`start_ray`; :func:`serray.raycluster.check_request`).

        Raises:
            ValueError: One line naming ``--fold-resources``, the request and the fix.
        """
        from serray.raycluster import check_request

        check_request(self.ray_request(), self.address)

    def start_ray(self) -> None:
        """Start a local Ray or join :attr:`address`, checking the fold request against
        this machine before and against the cluster's nodes after
        (:func:`serray.raycluster.start_ray`; a second call only checks).

        Raises:
            ValueError: A fold request no node can hold.
        """
        from serray.raycluster import start_ray

        start_ray(self)
