"""The fold executor's seams: one placement module, no import circle, no mock in production code,
Tune's settings restored after a search, and the in-process executor's hooks.

The numbers every driver gets through the executor are checked in ``test_golden_drivers``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

SERRAY = Path(__file__).resolve().parents[1] / "serray"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth, e.g. inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_no_unittest_mock_in_the_package():
    users = [str(p.relative_to(SERRAY)) for p in SERRAY.rglob("*.py") if any(m.startswith("unittest.mock") or m == "unittest"
                                                                             for m in _imports(p))]
    assert users == []


def test_fold_actors_do_not_import_the_drivers():
    """actors.py is below the executor and the drivers: it imports none of them (no circle)."""
    drivers = {"serray.training.run", "serray.training.executor", "serray.training.seeds", "serray.tune.runner"}
    assert not {m for m in _imports(SERRAY / "training" / "actors.py") if m.rsplit(".", 1)[0] in drivers or m in drivers}


def test_no_private_name_imported_across_packages():
    bad = []
    for path in SERRAY.rglob("*.py"):
        package = ".".join(path.relative_to(SERRAY.parent).with_suffix("").parts[:2])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("serray."):
                other = ".".join(node.module.split(".")[:2])
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if other != package and private:
                    bad.append(f"{path.relative_to(SERRAY)}: {node.module} {private}")
    assert bad == []


def test_replaced_restores_the_class_even_after_an_error():
    from serray.tune.state import replaced

    class A:
        def f(self):
            return 1

    with pytest.raises(RuntimeError), replaced(A, f=lambda self: 2):
        assert A().f() == 2
        raise RuntimeError("boom")
    assert A().f() == 1 and "f" in A.__dict__


def test_stop_grace_and_environment_last_only_for_the_fit(monkeypatch):
    from ray.tune.execution.tune_controller import TuneController

    from serray.tune.runner import _environ, _stop_grace

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "7")
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    init = TuneController.__init__
    with _environ({"TUNE_GLOBAL_CHECKPOINT_S": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}), _stop_grace():
        assert TuneController.__init__ is not init
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "1" and os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
    assert TuneController.__init__ is init
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "7" and "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ


def test_train_here_runs_each_fold_then_its_hook_with_the_threads_asked():
    import torch

    from serray.models import registry
    from serray.protocols import make_folds
    from serray.training.data import TrainingInputs, class_list, make_label_table, pack_features
    from serray.training.executor import train_here
    from serray.training.trainer import fold_trainer

    from _training_helpers import synth_manifest, vector_features

    m = synth_manifest(n_speakers=4, per_class=3)
    inputs = TrainingInputs(pack_features(vector_features(m), m["utt_id"].tolist()),
                            make_label_table(m, class_list(m["emotion"])))
    folds = make_folds(m, "kfold", k=2, seed=0)
    cfg = {"hidden_sizes": [8], "epochs": 2}
    seen = []

    def after(fold, trainer, result):
        seen.append((fold.index, torch.get_num_threads(), trainer.stopped, result.index))

    before = torch.get_num_threads()
    full = registry.get("mlp").config(overrides=cfg)
    results = train_here(folds, lambda f: fold_trainer("mlp", full, inputs, f, normalize="global", seed=0, device="cpu"),
                         threads=1, after=after)
    assert seen == [(0, 1, True, 0), (1, 1, True, 1)]
    assert torch.get_num_threads() == before
    assert [r.index for r in results] == [0, 1] and all(np.isfinite(r.test_logits).all() for r in results)
