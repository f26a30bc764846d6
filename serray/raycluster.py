"""Starting or joining Ray: local by default, ``--address`` to join a cluster.

:func:`start_ray` (also :meth:`serray.training.resources.Resources.start_ray`) is the one
place where serray decides how Ray starts: it checks the fold request of a
:class:`~serray.training.resources.Resources` against this machine before a local Ray
starts, starts it or joins the cluster (:func:`init_ray`), and then checks the request
against every alive node, so a fold that fits the cluster's total but no single node is
refused with one line instead of waiting forever for resources Ray cannot give.

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
import os
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from serray.training.resources import Resources

__all__ = ["start_ray", "init_ray", "cluster_resources", "local_resources", "check_request"]

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
        ValueError: A fold request no node can hold: one line naming ``--fold-resources``,
            what was asked, the largest node and the fix (:func:`check_request`).
    """
    from serray.training.resources import Resources

    res = resources if resources is not None else Resources()
    request = res.request()
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


def _node_resources() -> list[dict[str, float]]:
    """Resources of each alive node of the connected Ray cluster."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def check_request(request: Mapping[str, float] | None, address: str | None = None,
                  option: str = "--fold-resources") -> None:
    """Refuse a per-task request (``{"cpu": c, "gpu": g}``) that no node can hold.

    Ray would wait forever for such a task ("cannot fulfil"). Checked against the
    connected cluster's largest node when Ray runs, else against this machine when a
    local Ray is to be started; with ``address`` and no Ray yet there is nothing to
    check against (call again after :func:`init_ray`).

    Raises:
        ValueError: Naming ``option``, what was asked, what there is and the fix.
    """
    import ray

    want = {"CPU": float((request or {}).get("cpu") or 0.0), "GPU": float((request or {}).get("gpu") or 0.0)}
    if not any(want.values()):
        return
    if ray.is_initialized():
        nodes, where = _node_resources(), "the largest node of the Ray cluster"
    elif address is None:
        nodes, where = [local_resources(gpus=want["GPU"] > 0)], "this machine (local Ray)"
    else:
        return
    for kind, amount in want.items():
        best = max((float(n.get(kind, 0.0)) for n in nodes), default=0.0)
        if amount > best + 1e-9:
            name = kind.lower()
            raise ValueError(
                f"{option} {name}={amount:g}: {where} has {best:g} {kind}(s), so the task could never start; "
                f"ask for {name}<={best:g}" + (" (omit gpu= to train on CPU)" if kind == "GPU" and best == 0 else "")
            )
