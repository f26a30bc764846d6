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
