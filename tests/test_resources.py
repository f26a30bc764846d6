"""Execution settings as one :class:`~serray.training.resources.Resources`, Ray started in one
place, and a fold request checked against each node of a joined cluster (issue 40, item 6).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from serray.cli import main
from serray.training.resources import DEVICES, Resources

SERRAY = Path(__file__).resolve().parents[1] / "serray"


@pytest.mark.parametrize("fields, needle", [
    ({"device": "gpu"}, "device must be one of auto, cpu, cuda, got 'gpu'"),
    ({"fold_cpus": -1}, "fold_cpus (--fold-resources cpu=) must be a number >= 0"),
    ({"fold_gpus": "half"}, "fold_gpus (--fold-resources gpu=) must be a number >= 0"),
    ({"folds_per_actor": 0}, "folds_per_actor (--folds-per-actor) must be an integer >= 1"),
    ({"folds_per_actor": 1.5}, "folds_per_actor (--folds-per-actor) must be an integer >= 1"),
    ({"num_cpus": 0}, "num_cpus (--num-cpus) must be an integer >= 1"),
    ({"parallel": "yes"}, "parallel must be True, False or None"),
    ({"address": ""}, "address must be 'auto', 'HOST:PORT' or None"),
])
def test_bad_resources_are_refused_naming_the_field(fields, needle):
    with pytest.raises(ValueError) as err:
        Resources(**fields)
    assert needle in str(err.value)


def test_resources_defaults_and_request():
    res = Resources()
    assert (res.address, res.device, res.parallel) == (None, "auto", None) and res.device in DEVICES
    assert res.request() == {"cpu": 0.0, "gpu": 0.0}
    seeds = Resources(fold_gpus=0.5).with_defaults(fold_cpus=1.0, fold_gpus=0.0)
    assert (seeds.fold_cpus, seeds.fold_gpus) == (1.0, 0.5)
    assert Resources(fold_cpus=2, folds_per_actor=3).fold_record() == {"num_cpus": 2, "num_gpus": None, "folds_per_actor": 3}
    with pytest.raises(ValueError, match="folds_per_actor"):
        res.replace(folds_per_actor=-2)  # a copy is validated too
    with pytest.raises(Exception):
        res.device = "cpu"  # frozen


def test_cli_flags_map_to_one_resources(monkeypatch):
    import ray

    from serray.commands._common import resources_from_flags

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a cluster to join is checked once joined

    res = resources_from_flags(address="auto", fold_resources="cpu=2,gpu=0.5", folds_per_actor=2, device="cpu")
    assert res == Resources(address="auto", device="cpu", fold_cpus=2.0, fold_gpus=0.5, folds_per_actor=2)
    assert resources_from_flags(use_ray=True).parallel is True
    assert resources_from_flags(sequential=True, fold_resources="cpu=x").parallel is False  # not read: no Ray
    with pytest.raises(ValueError, match="--sequential and --ray contradict"):
        resources_from_flags(sequential=True, use_ray=True)
    with pytest.raises(ValueError, match="--fold-resources expects cpu=N,gpu=M"):
        resources_from_flags(fold_resources="cores=2")


def test_bad_folds_per_actor_fails_with_one_line_before_anything_starts(tmp_path):
    r = CliRunner().invoke(main, ["train", "svm", "-w", str(tmp_path), "--folds-per-actor", "0"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.output.strip().splitlines()[-1].startswith("error: folds_per_actor (--folds-per-actor) must be an integer >= 1")


def test_ray_is_started_in_one_place():
    """Only :mod:`serray.raycluster` calls ``init_ray`` or ``ray.init``; drivers go through ``start_ray``."""
    offenders = []
    for path in SERRAY.rglob("*.py"):
        if path.name == "raycluster.py":
            continue
        text = path.read_text()
        if re.search(r"\binit_ray\(|\bray\.init\(", text):
            offenders.append(str(path.relative_to(SERRAY)))
    assert offenders == []


@pytest.fixture
def two_small_nodes():
    """A Ray cluster of two nodes with 1 CPU each (``ray.cluster_utils``), this process not yet connected."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a local Ray of an earlier test: join the cluster instead
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                                                          "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def small_workdir(tmp_path, monkeypatch):
    """A work directory with a synthetic manifest whose features ``vec`` are served in memory."""
    import serray.features
    from serray.manifest import write_manifest

    from _training_helpers import serve_feature_sets, synth_manifest, vector_features

    m = synth_manifest(n_speakers=4, per_class=3)
    write_manifest(m, tmp_path, "syn")
    monkeypatch.setattr(serray.features, "load_features", serve_feature_sets({"vec": vector_features(m)}))
    return tmp_path


def test_tune_on_a_joined_cluster_refuses_a_fold_no_node_holds(small_workdir, two_small_nodes):
    """`tune --address` with `--fold-resources cpu=2` on two 1-CPU nodes: the cluster's total (2
    CPUs) holds the fold actor but no node does. It used to pass the total check and wait forever
    for Ray to place the trial's actors ("cannot fulfil"); it is refused with one line before any
    trial starts (``--time-budget`` only bounds the wait of the code before the fix)."""
    import ray

    r = CliRunner().invoke(main, [
        "tune", "svm", "-w", str(small_workdir), "--features", "vec", "--protocol", "kfold", "--k", "2",
        "--num-samples", "1", "--address", two_small_nodes.address, "--fold-resources", "cpu=2",
        "--time-budget", "20",
    ])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert line == ["error: --fold-resources cpu=2: the largest node of the Ray cluster has 1 CPU(s), so the task "
                    "could never start; ask for cpu<=1"], r.output
    assert ray.is_initialized() and len([n for n in ray.nodes() if n["Alive"]]) == 2  # it did join the cluster
    assert not any(small_workdir.rglob("trials/*.json"))  # no trial ran
