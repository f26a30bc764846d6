"""Starting or joining Ray: local by default, ``--address`` to join a cluster.

:func:`start_ray` (also :meth:`serray.training.resources.Resources.start_ray`) is the one
place where serray decides how Ray starts: it checks the fold request of a
:class:`~serray.training.resources.Resources` against this machine before a local Ray
starts, starts it or joins the cluster (:func:`init_ray`), and then checks the request
against every alive node, so a fold that fits the cluster's total but no single node is
refused with one line instead of waiting forever for resources Ray cannot give. The
request includes the fold's custom Ray resources (``--fold-resources spot=0.01``,
:attr:`~serray.training.resources.Resources.fold_custom`): one that no node has is
refused naming the custom resources the nodes offer (:func:`check_request`).

Default fold sizes come from the nodes too (:func:`fold_size`, used by
:func:`serray.training.actors.fold_resources`): the largest share of a node at which all of
a trial's fold actors fit the alive nodes at once, never the cluster's total shared evenly.

The entry points that start Ray, all through :func:`start_ray`:

* :func:`serray.training.run.train_run` (``serray train``, ``crosscorpus``), when its
  folds train on Ray fold actors;
* :func:`serray.training.seeds.train_seeds` (``serray seeds``), for its fold tasks;
* :func:`serray.training.executor.run_folds` with ``parallel`` (called directly);
* :func:`serray.tune.runner.tune_model` (``serray tune``) and
  :func:`serray.tune.nested.nested_tune` (``serray tune --nested``, when parallel);
* :func:`serray.ensemble.runner.distributed_search` (``serray ensemble``);
* the feature-extraction actor pool (:mod:`serray.features.workers`, ``serray features``
  and the extraction a training command triggers, ``serray predict`` with ``--ray``,
  ``--address`` or a large input);
* ``serray demo``, once for its whole pipeline.

Commands that never need Ray (scikit-learn models, small CPU jobs, ``--sequential``)
never start it.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from serray.training.resources import Resources

__all__ = [
    "start_ray", "init_ray", "cluster_resources", "local_resources", "check_request", "alive_nodes", "fold_nodes",
    "fold_size", "slots", "ray_names",
]

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start local Ray or connect to a running cluster; a second call is a no-op.

    Args:
        address: ``None`` for a new local single-node Ray of this process's own (token
            authentication off unless ``RAY_AUTH_MODE`` is set), never a Ray that already
            runs on the machine, unless ``RAY_ADDRESS`` names one; ``"auto"`` or
            ``"HOST:PORT"`` to join a cluster started with ``ray start`` / ``ray up``, with the authentication the
            environment gives (``RAY_AUTH_MODE=token`` and the token on cluster nodes).
        num_cpus: CPUs for a local Ray (default: all). Ignored when joining a cluster.
        num_gpus: GPUs for a local Ray (default: detected). Ignored when joining.

    A local Ray's workers run at normal priority (``RAY_worker_niceness=0`` unless set);
    a cluster's are set by its ``ray start`` (``cluster.yaml`` sets 0 too).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    # RAY_ADDRESS (set e.g. by `ray job submit` for its driver) names the cluster to join.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        # Never weaken a cluster's authentication: RAY_AUTH_MODE and the token come from
        # the environment (cluster.yaml sets RAY_AUTH_MODE=token on every node).
        log.info("joining Ray cluster at %s (RAY_AUTH_MODE=%s)", address, os.environ.get("RAY_AUTH_MODE", "unset"))
        ray.init(address=address, **kwargs)
    else:
        # Local runs and tests start Ray without a token unless RAY_AUTH_MODE is set; its
        # ports listen on every interface, so on a shared network set RAY_AUTH_MODE=token.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray starts workers at nice 15; serray's workers are the job, so they run at the
        # driver's priority (on a shared machine 1.8-2.7x faster feature extraction).
        # RAY_worker_niceness=15 restores Ray's default.
        os.environ.setdefault("RAY_worker_niceness", "0")
        log.info("starting local Ray (workers at nice %s)", os.environ["RAY_worker_niceness"])
        # address="local": a new Ray of its own. Without an address ray.init() would join
        # the latest cluster started on this machine (/tmp/ray/ray_current_cluster, written
        # by `ray start --head` and Ray's test clusters), with its resources and its fate.
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())


def start_ray(resources: "Resources | None" = None) -> None:
    """Start a local Ray or join ``resources.address`` (default: a local Ray of all CPUs),
    with the fold request checked before (this machine, for a local Ray) and after (every
    alive node of the cluster, for a joined one); a second call only checks.

    Raises:
        ValueError: A fold request (custom resources included) no node can hold: one line
            naming ``--fold-resources``, what was asked, the largest node and the fix
            (:func:`check_request`).
    """
    from serray.training.resources import Resources

    res = resources if resources is not None else Resources()
    request = res.ray_request()
    check_request(request, res.address)  # this machine, before a local Ray starts
    init_ray(res.address, num_cpus=res.num_cpus)
    check_request(request, res.address)  # a joined cluster's nodes (the total is not enough)


def cluster_resources() -> dict:
    """Total resources of the connected Ray cluster (``{}`` when Ray is not running)."""
    import ray

    return dict(ray.cluster_resources()) if ray.is_initialized() else {}


def local_resources(gpus: bool = True) -> dict[str, float]:
    """CPUs and GPUs a local Ray started by :func:`init_ray` would have, found without starting it.

    CPUs: those this process may run on; GPUs: ``CUDA_VISIBLE_DEVICES`` when set, else
    the CUDA devices torch sees (only looked up with ``gpus=True``).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    out = {"CPU": float(cpus)}
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            out["GPU"] = float(len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
        else:
            try:
                import torch

                out["GPU"] = float(torch.cuda.device_count())
            except Exception:  # noqa: BLE001 - no torch / no driver: no GPU
                out["GPU"] = 0.0
    return out


def alive_nodes() -> list[dict[str, float]]:
    """Resources of each alive node of the connected Ray cluster (``[]`` when Ray is not running)."""
    import ray

    if not ray.is_initialized():
        return []
    return [{k: float(v) for k, v in (n.get("Resources") or {}).items()} for n in ray.nodes() if n.get("Alive")]


def ray_names(request: Mapping[str, float] | None) -> dict[str, float]:
    """A fold request in Ray's names, amounts > 0 only: ``cpu``/``gpu`` -> ``CPU``/``GPU``,
    custom resources as they are.

    Example:
        >>> ray_names({"cpu": 1, "gpu": 0, "spot": 0.01})
        {'CPU': 1.0, 'spot': 0.01}
    """
    out = {}
    for key, value in (request or {}).items():
        if value and float(value) > 0:
            out[key.upper() if key in ("cpu", "gpu") else key] = float(value)
    return out


def slots(nodes: Sequence[Mapping[str, float]], request: Mapping[str, float]) -> int:
    """How many tasks of ``request`` (Ray's names, :func:`ray_names`) fit on ``nodes`` at once:
    per node, the fewest of any resource asked for; a node without one holds none.

    Example:
        >>> slots([{"CPU": 2.0}, {"CPU": 4.0, "spot": 1.0}], {"CPU": 1.5, "spot": 0.25})
        2
    """
    want = {k: float(v) for k, v in request.items() if v and float(v) > 0}
    if not want:
        return 2**31  # asks for nothing: no limit
    return sum(min(math.floor(float(n.get(k, 0.0)) / v + 1e-9) for k, v in want.items()) for n in nodes)


def fold_nodes(custom: Mapping[str, float] | None = None) -> list[dict[str, float]]:
    """The alive nodes a fold asking ``custom`` resources can run on (all alive nodes when
    none can: the node check, :func:`check_request`, refuses such a request)."""
    nodes = alive_nodes()
    fitting = [n for n in nodes if slots([n], dict(custom or {})) > 0]
    return fitting or nodes


def _shares(nodes: Sequence[Mapping[str, float]], kind: str, n: int) -> list[float]:
    """Every node's ``kind`` divided by 1..``n``, rounded down to 0.01, distinct, > 0, largest first."""
    values = {math.floor(100 * float(node.get(kind, 0.0)) / k + 1e-9) / 100 for node in nodes for k in range(1, n + 1)}
    return sorted((v for v in values if v > 0), reverse=True)


def _largest(options: Sequence[float], fits: Callable[[float], bool]) -> float:
    """The first of ``options`` (largest first) that ``fits`` (monotone: a smaller one fits
    whenever a larger one does); the last (smallest) when none does."""
    lo, hi = 0, len(options) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(options[mid]):
            hi = mid
        else:
            lo = mid + 1
    return options[lo]


def fold_size(nodes: Sequence[Mapping[str, float]], n_actors: int, cpu: float | None = None, gpu: float | None = None,
              custom: Mapping[str, float] | None = None, gpus: bool = True) -> tuple[float, float]:
    """Each of ``n_actors`` fold actors' ``(CPUs, GPUs)``: ``cpu``/``gpu`` where given, and
    for one left out (``None``) the largest share that lets all ``n_actors`` actors (with
    the other resource and ``custom``) fit ``nodes`` at once: a node's amount divided by a
    whole number, rounded down to 0.01 (GPUs first, then CPUs; GPUs only when ``gpus``
    and some node has one, else 0; at least 0.01 CPU).

    On one node this is that node's CPUs (and GPUs) shared evenly. On a cluster it is no
    longer the cluster's total shared evenly, which on small or uneven nodes made an actor
    larger than any node, or a trial's actors that no set of nodes could hold at once, and
    Ray waited for them forever: the size comes from the nodes, so a default actor is never
    larger than the node that must hold it, and a trial's placement group always fits an
    idle cluster.

    Example:
        >>> fold_size([{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 4.0}], 5)  # the total shared: 1.2 each
        (1.0, 0.0)
        >>> fold_size([{"CPU": 16.0}] * 4, 10)  # 6.4 each: two per node, 8 of the 10 at once
        (5.33, 0.0)
    """
    custom = dict(custom or {})

    def fits(c: float, g: float) -> bool:
        return slots(nodes, {"CPU": c, "GPU": g, **custom}) >= n_actors

    cpu_options = [float(cpu)] if cpu is not None else (_shares(nodes, "CPU", n_actors) or [0.01])
    gpu_options = [float(gpu)] if gpu is not None else ((_shares(nodes, "GPU", n_actors) if gpus else []) or [0.0])
    g = _largest(gpu_options, lambda g: fits(cpu_options[-1], g))
    return _largest(cpu_options, lambda c: fits(c, g)), g


def _offers(nodes: Sequence[Mapping[str, float]], key: str) -> str:
    """The custom resources the nodes offer (largest amount on one node), for the refusal of ``key``."""
    from serray.training.resources import RAY_BUILTIN

    best: dict[str, float] = {}
    for node in nodes:
        for k, v in node.items():
            if k.lower() not in RAY_BUILTIN and (not k.startswith("node:") or key.startswith("node:")) and "_group_" not in k:
                best[k] = max(best.get(k, 0.0), float(v))
    if not best:
        return "no custom resources (start a node with e.g. ray start --resources '{\"spot\": 1}')"
    return ", ".join(f"{k}={v:g}" for k, v in sorted(best.items()))


def _request_text(want: Mapping[str, float]) -> str:
    """``{"CPU": 1, "spot": 0.01}`` -> ``cpu=1,spot=0.01`` (as ``--fold-resources`` spells it)."""
    return ",".join(f"{k.lower() if k in ('CPU', 'GPU') else k}={v:g}" for k, v in want.items())


def _refuse_one(option: str, kind: str, amount: float, nodes: Sequence[Mapping[str, float]], where: str) -> None:
    """Refuse ``amount`` of one resource when no node has that much of it."""
    best = max((float(n.get(kind, 0.0)) for n in nodes), default=0.0)
    if amount <= best + 1e-9:
        return
    if kind in ("CPU", "GPU"):
        name = kind.lower()
        raise ValueError(
            f"{option} {name}={amount:g}: {where} has {best:g} {kind}(s), so the task could never start; "
            f"ask for {name}<={best:g}" + (" (omit gpu= to train on CPU)" if kind == "GPU" and best == 0 else "")
        )
    if best == 0:
        raise ValueError(f"{option} {kind}={amount:g}: no node of the Ray cluster has resource {kind!r}; "
                         f"nodes offer: {_offers(nodes, kind)}")
    raise ValueError(f"{option} {kind}={amount:g}: the most of resource {kind!r} on one node of the Ray cluster is "
                     f"{best:g}, so the task could never start; ask for {kind}<={best:g}")


def check_request(request: Mapping[str, float] | None, address: str | None = None,
                  option: str = "--fold-resources") -> None:
    """Refuse a per-task request (``{"cpu": c, "gpu": g, **custom}``,
    :meth:`~serray.training.resources.Resources.ray_request`) that no node can hold.

    Ray would wait forever for such a task ("cannot fulfil"). Checked against the
    connected cluster's alive nodes when Ray runs (each resource against the node with
    the most of it, then the whole request against each node), else the CPUs and GPUs
    against this machine when a local Ray is to be started (custom resources once it
    runs); with ``address`` and no Ray yet there is nothing to check against (call again
    after :func:`init_ray`).

    Raises:
        ValueError: One line naming ``option``, what was asked, what there is and the fix;
            for a custom resource no node has, the custom resources the nodes offer.
    """
    import ray

    want = ray_names(request)
    if ray.is_initialized():
        nodes, where = alive_nodes(), "the largest node of the Ray cluster"
    elif address is None:
        want = {k: v for k, v in want.items() if k in ("CPU", "GPU")}
        nodes, where = [local_resources(gpus="GPU" in want)], "this machine (local Ray)"
    else:
        return
    if not want:
        return
    for kind, amount in want.items():
        _refuse_one(option, kind, amount, nodes, where)
    if len(want) > 1 and not slots(nodes, want):
        shapes = sorted({" ".join(f"{k}={float(n.get(k, 0.0)):g}" for k in want) for n in nodes})
        raise ValueError(f"{option} {_request_text(want)}: no single node of the Ray cluster has all of it, so the "
                         f"task could never start (nodes: {'; '.join(shapes[:8])}); ask for less of one resource")
