"""Warm fold actors for a search (serray.tune.pool): when they serve, how sets are lent and retired."""

from __future__ import annotations

import pytest

from serray.tune.pool import FoldPool, ahead_epochs, pool_enabled, pool_sets


def test_sets_are_the_trials_that_fit_at_once():
    assert pool_sets(2, 1.0, 2, num_samples=20) == 1
    assert pool_sets(16, 1.0, 5, num_samples=20) == 3
    assert pool_sets(16, 1.0, 5, num_samples=2) == 2
    assert pool_sets(16, 1.0, 5, num_samples=20, max_concurrent=1) == 1
    assert pool_sets(1, 2.0, 1, num_samples=20) == 1  # never none


def test_training_ahead_only_where_the_first_trial_is_known_and_cannot_stop_sooner():
    kw = dict(resume=False, time_budget_s=None, n_sets=1, first_point={"lr": 0.001})
    assert ahead_epochs(8, 30, **kw) == 8
    assert ahead_epochs(8, 5, **kw) == 5
    assert ahead_epochs(8, 30, **{**kw, "resume": True}) == 0
    assert ahead_epochs(8, 30, **{**kw, "time_budget_s": 600.0}) == 0
    assert ahead_epochs(8, 30, **{**kw, "n_sets": 2}) == 0  # which trial gets set 0 is not known
    assert ahead_epochs(8, 30, **{**kw, "first_point": None}) == 0


def test_pool_serves_a_local_single_node_ray_with_cpu_folds_only(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    assert pool_enabled(None, 0.0)
    assert not pool_enabled("ray://head:10001", 0.0)
    assert not pool_enabled(None, 0.5)
    monkeypatch.setenv("SERRAY_TUNE_POOL", "0")
    assert not pool_enabled(None, 0.0)
    monkeypatch.delenv("SERRAY_TUNE_POOL")
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    assert not pool_enabled(None, 0.0)


@pytest.mark.slow
def test_sets_are_lent_once_returned_and_a_set_with_a_dead_actor_is_retired():
    import ray

    from serray.raycluster import init_ray
    from serray.tune.pool import _Broker

    init_ray(num_cpus=2)

    @ray.remote(num_cpus=0)
    class Stub:
        def node_id(self) -> str:
            return ray.get_runtime_context().get_node_id()

    sets = [[Stub.remote(), Stub.remote()], [Stub.remote()]]
    pool = FoldPool(ray.remote(num_cpus=0)(_Broker).remote(2), sets)
    try:
        first, second = pool.borrow(), pool.borrow()
        assert first[0] == 0 and second[0] == 1 and len(first[1]) == 2
        assert pool.borrow() is None  # every set lent: the trial starts its own actors
        pool.give_back(0)
        assert pool.borrow()[0] == 0
        ray.kill(sets[1][0])
        pool.give_back(1)  # its actor is dead: retired, not lent again
        pool.give_back(0)
        assert pool.borrow()[0] == 0
        assert pool.borrow() is None
    finally:
        pool.shutdown()
