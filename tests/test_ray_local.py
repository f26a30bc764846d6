"""A local serray run starts its own Ray, never joins another Ray running on the machine.

``ray.init()`` without an address joins the latest cluster started on the machine (the
address in ``/tmp/ray/ray_current_cluster``, written by ``ray start --head`` and by Ray's
test clusters): a recipe started beside such a cluster trained on it, with its resources,
and died with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, ray
from ray.cluster_utils import Cluster
from serray.raycluster import init_ray
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"other_head": 1}})
try:
    init_ray(num_cpus=1)
    print("PROBE=" + json.dumps({"gcs": ray.get_runtime_context().gcs_address, "other": cluster.address,
                                 "resources": sorted(ray.cluster_resources())}))
    ray.shutdown()
finally:
    cluster.shutdown()
"""


def test_local_run_starts_its_own_ray_beside_a_running_cluster():
    root = Path(__file__).parents[1]
    env = {"PATH": "/usr/bin:/bin", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=240, cwd=str(root))
    assert r.returncode == 0, r.stderr[-3000:]
    probe = json.loads([x for x in r.stdout.splitlines() if x.startswith("PROBE=")][-1][len("PROBE="):])
    assert probe["gcs"] != probe["other"], "a local init_ray joined the cluster already running on the machine"
    assert "other_head" not in probe["resources"]
