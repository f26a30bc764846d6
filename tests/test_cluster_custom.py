"""Custom Ray resources in ``--fold-resources`` and fold sizes that fit a joined cluster's
nodes, on a real two-node ``ray.cluster_utils.Cluster``: a head of 1 CPU and a worker of 2
CPUs that declares ``resources={"spot": 1}`` (as ``ray start --resources '{"spot": 1}'``).

- ``spot=0.01`` puts every fold actor (``serray train``) and fold task (``serray seeds``)
  on the worker, the only node that has it;
- a resource no node has (``spot2=1``), or more of it than a node has (``spot=2``), is
  refused with one line before any trial starts;
- without ``--fold-resources`` a search's fold actors are sized from the nodes: the
  cluster's 3 CPUs shared by 2 actors (1.5 each) fitted only one of them at once, and the
  trial waited for its placement group forever.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from serray.cli import main
from test_resources import small_workdir  # noqa: F401 - the fixture: a synthetic work directory, features in memory

DATA = ["--features", "vec", "--protocol", "kfold", "--k", "2"]


@pytest.fixture(scope="module")
def spot_cluster():
    """The two-node cluster (this process joins it through each command's ``--address``)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a local Ray of an earlier test: the commands join this cluster instead
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                                                          "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2, resources={"spot": 1}, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()


def _ok(r) -> None:
    assert r.exit_code == 0 and r.exception is None, r.output


def test_train_fold_actors_run_on_the_node_with_the_custom_resource(spot_cluster, small_workdir, monkeypatch):
    import ray

    from serray.training.executor import FoldActors

    cluster, spot_node = spot_cluster
    where: list[str] = []
    real_kill = FoldActors.kill

    def kill(self) -> None:  # the actors' nodes, read before they are killed
        where.extend(ray.get([a.node_id.remote() for a in self.actors]))
        real_kill(self)

    monkeypatch.setattr(FoldActors, "kill", kill)
    r = CliRunner().invoke(main, ["train", "svm", "-w", str(small_workdir), *DATA, "--run", "spot",
                                  "--address", cluster.address, "--fold-resources", "cpu=1,spot=0.01"])
    _ok(r)
    assert len(where) == 2 and set(where) == {spot_node}, where  # 2 actors of 1 CPU: the head had room for one
    record = json.loads(next(small_workdir.rglob("runs/spot/record.json")).read_text())
    assert record["fold_resources"]["custom"] == {"spot": 0.01}


def test_seeds_fold_tasks_run_on_the_node_with_the_custom_resource(spot_cluster, small_workdir, monkeypatch):
    import serray.training.seeds as seeds

    cluster, spot_node = spot_cluster
    where: list[str] = []
    real_run_tasks = seeds.run_tasks

    def run_tasks(fn, jobs, **kwargs):
        def located(*args):
            import ray

            return fn(*args), ray.get_runtime_context().get_node_id()

        for key, (result, node) in real_run_tasks(located, jobs, **kwargs):
            where.append(node)
            yield key, result

    monkeypatch.setattr(seeds, "run_tasks", run_tasks)
    r = CliRunner().invoke(main, ["seeds", "svm", "-w", str(small_workdir), *DATA, "--n", "1", "--run-prefix", "p",
                                  "--address", cluster.address, "--fold-resources", "spot=0.01"])
    _ok(r)
    assert len(where) == 2 and set(where) == {spot_node}, where


@pytest.mark.parametrize("request_, line", [
    ("spot2=1", "error: --fold-resources spot2=1: no node of the Ray cluster has resource 'spot2'; nodes offer: spot=1"),
    ("cpu=1,spot=2", "error: --fold-resources spot=2: the most of resource 'spot' on one node of the Ray cluster is 1, "
                     "so the task could never start; ask for spot<=1"),
])
def test_tune_refuses_a_custom_resource_no_node_holds_before_any_trial(spot_cluster, small_workdir, request_, line):
    cluster, _ = spot_cluster
    r = CliRunner().invoke(main, ["tune", "svm", "-w", str(small_workdir), *DATA, "--num-samples", "1",
                                  "--address", cluster.address, "--fold-resources", request_, "--time-budget", "20"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("error:")] == [line], r.output
    assert not any(small_workdir.rglob("trials/*.json"))  # no trial ran


def test_tune_default_fold_actors_fit_the_nodes(spot_cluster, small_workdir):
    """No --fold-resources: 2 fold actors on nodes of 1 and 2 CPUs get 1 CPU each (one per node
    or both on the worker), not the total's 1.5 each, which only the worker could hold, one at a
    time: the trial's placement group was never placed (the search ran out its --time-budget
    with no trial)."""
    cluster, _ = spot_cluster
    r = CliRunner().invoke(main, ["tune", "svm", "-w", str(small_workdir), *DATA, "--num-samples", "1",
                                  "--address", cluster.address, "--time-budget", "40"])
    _ok(r)
    records = [json.loads(p.read_text()) for p in small_workdir.rglob("trials/*.json")]
    assert len(records) == 1 and records[0]["finished"] == "completed", records
