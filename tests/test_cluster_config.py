"""cluster.yaml passes Ray's own cluster-config validation; a typo fails it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def _load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_is_valid_for_ray():
    cfg = _load()
    _validate(cfg)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert any("pip install" in c and "serray" in c for c in cfg["setup_commands"])
    assert any("/mnt/serray" in c for c in cfg["setup_commands"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["available_node_types"]["gpu_worker"].__setitem__("min_worker", 1),
        lambda c: c.__setitem__("max_worker", 3),
        lambda c: c["provider"].pop("type"),
        lambda c: c.__setitem__("setup_commands", "pip install serray"),
    ],
)
def test_typo_in_cluster_yaml_fails_validation(mutate):
    cfg = _load()
    mutate(cfg)
    with pytest.raises(Exception):
        _validate(cfg)


def _start_commands(cfg: dict) -> list[str]:
    return [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]


def test_cluster_yaml_uses_token_auth_and_a_localhost_dashboard():
    """No unauthenticated dashboard/job API on all interfaces (Ray's documented token-auth setup)."""
    cfg = _load()
    text = CLUSTER_YAML.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text and "0.0.0.0" not in text
    # the locally generated token goes to every node, and every shell there uses token mode
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cfg["initialization_commands"])
    assert any(c.startswith("chmod 600 ~/.ray/auth_token") for c in cfg["setup_commands"])
    starts = _start_commands(cfg)
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token " in c for c in starts)
    (head,) = [c for c in starts if "--head" in c]
    assert "--dashboard-host=127.0.0.1" in head


def test_ray_start_flags_in_cluster_yaml_exist():
    """Every --flag given to `ray start` is an option of the installed Ray's `ray start`."""
    import re

    from ray.scripts.scripts import start

    known = {opt for p in start.params for opt in p.opts}
    for cmd in _start_commands(_load()):
        flags = re.findall(r"(--[a-z-]+)", cmd.split("ray start", 1)[1])
        assert flags and set(flags) <= known, sorted(set(flags) - known)


def test_joining_a_cluster_keeps_the_environments_auth_mode(monkeypatch):
    """init_ray(address=...) must not switch token authentication off; a local Ray still may."""
    import os

    import ray

    from serray import raycluster

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append((kw.get("address"), os.environ.get("RAY_AUTH_MODE"))))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    raycluster.init_ray(address="10.0.0.1:6379")
    assert calls == [("10.0.0.1:6379", None)] and "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    raycluster.init_ray(address="auto")
    assert calls[-1] == ("auto", "token")
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    raycluster.init_ray()
    assert calls[-1] == ("local", "disabled")  # a Ray of its own, never one already running
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")  # as `ray job submit` sets it for its driver
    raycluster.init_ray()
    assert calls[-1] == ("10.0.0.2:6379", None)
