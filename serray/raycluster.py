"""Starting or joining Ray: local by default, ``--address`` to join a cluster."""

from __future__ import annotations

import logging
import os

__all__ = ["init_ray", "cluster_resources"]

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start local Ray or connect to a running cluster; a second call is a no-op.

    Args:
        address: ``None`` for a local single-node Ray; ``"auto"`` or ``"HOST:PORT"`` to
            join a cluster started with ``ray start`` / ``ray up``.
        num_cpus: CPUs for a local Ray (default: all). Ignored when joining a cluster.
        num_gpus: GPUs for a local Ray (default: detected). Ignored when joining.
    """
    import ray

    if ray.is_initialized():
        return
    # Local runs and tests need no token-based auth; a user can still set it explicitly.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Workers inherit this so serray's modules import without a package upload.
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, **kwargs)
    else:
        log.info("starting local Ray")
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())


def cluster_resources() -> dict:
    """Total resources of the connected Ray cluster (``{}`` when Ray is not running)."""
    import ray

    return dict(ray.cluster_resources()) if ray.is_initialized() else {}
