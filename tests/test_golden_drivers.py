"""Every fold-training driver gives the fixed-seed outputs it gave before the fold executor.

``tests/data/golden_drivers_v1.npz`` was written by ``tests/data/make_golden_drivers.py``
with the code before :mod:`serray.training.executor` replaced the drivers' own fold
loops: the validation and test logits of every registered model trained by ``train_run``
in this process and on a Ray fold actor, the predictions of ``train_seeds`` (2 seeds),
a fixed-seed ``tune`` of mlp (leaderboard values and every trial's logits), a nested
search in this process and as Ray tasks, and intermediate fusion (the retrained systems'
embeddings and the new classifier's logits).

On the machine that wrote the file (same torch, CPU kernels, machine, CPU count and CPU
model: :func:`_golden_drivers.fingerprint`) the outputs must be bit-identical. Elsewhere the
float rounding differs (the file's fingerprint predates the CPU model, which was added when
an AMD EPYC with the same torch, AVX512 kernels and CPU count rounded differently from the
writer's CPU, so today every machine compares within the tolerances; a file written again
by ``tests/data/make_golden_drivers.py`` is compared bit for bit on its own CPU): feed-forward and convolutional models stay within about 1e-6,
recurrent ones accumulate up to about 5e-4 (the magnitudes of
``test_model_contract.test_logits_unchanged_by_the_contract_redesign``); a change of
logic moves logits by orders of magnitude more. The search's leaderboard is compared
with the same tolerance; on another CPU a flipped near-tie could change a sampled
configuration, which this test would then report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import _golden_drivers as g
from serray.models import registry

#: Models trained on the Ray actor path by default; the rest are marked slow (an actor start each).
ACTOR_PATH_FAST = ("mlp", "svm", "cnn_lstm")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(g.GOLDEN) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One work directory for the module, its features served by the synthetic loader."""
    import serray.features

    w = g.make_workdir(tmp_path_factory.mktemp("golden") / "w")
    old = g.install_loader(g.manifest())
    yield w
    serray.features.load_features = old


@pytest.fixture(scope="module")
def ray_session() -> None:
    """One local Ray of 2 CPUs for the module (shut down at its end if this module started it)."""
    import ray

    from serray.raycluster import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(autouse=True)
def one_thread():
    """The generator ran every driver with one torch thread in this process."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _check(got: dict[str, np.ndarray], golden: dict[str, np.ndarray], prefix: str, recurrent: bool = False) -> None:
    want = {k: v for k, v in golden.items() if k.startswith(prefix)}
    assert want, f"the golden file has no {prefix!r} outputs"
    assert sorted(got) == sorted(want)
    exact = str(golden["fingerprint"]) == g.fingerprint()
    for key in sorted(want):
        if exact:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=5e-4 if recurrent else 1e-6, err_msg=key)


@pytest.mark.parametrize("model", registry.names())
def test_train_run_in_process(model, workdir, golden):
    _check(g.train_runs(workdir, model, parallel=False), golden, f"train/{model}/local/", model in g.RECURRENT)


@pytest.mark.parametrize("model", [m if m in ACTOR_PATH_FAST else pytest.param(m, marks=pytest.mark.slow)
                                   for m in registry.names()])
def test_train_run_on_fold_actors(model, workdir, golden, ray_session):
    _check(g.train_runs(workdir, model, parallel=True), golden, f"train/{model}/ray/", model in g.RECURRENT)


def test_train_seeds(workdir, golden, ray_session):
    _check(g.seeds(workdir), golden, "seeds/")


def test_tune_leaderboard_and_trial_logits(workdir, golden, ray_session):
    _check(g.tune(workdir), golden, "tune/")


def test_nested_search_in_process_and_on_ray_tasks(workdir, golden, ray_session):
    _check(g.nested(workdir), golden, "nested/")


def test_intermediate_fusion(workdir, golden, ray_session):
    _check(g.intermediate(workdir), golden, "fusion/")
