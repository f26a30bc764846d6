"""The model registry: families register themselves from their torch-free spec modules;
lookups stay torch-free; builders import their family on demand."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from serray.models import registry
from serray.models.registry import InputInfo


def test_model_lookup_and_experiment_setup_import_neither_torch_nor_sklearn():
    code = (
        "import sys\n"
        "from serray.models import registry\n"
        "for name in registry.names(): registry.get(name).config()\n"
        "registry.get('adarl').config(preset='reduced')\n"
        "import serray.training.experiment, serray.training.actors, serray.tune.runner, serray.protocols\n"
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("name, shape", [("mlp", (8,)), ("dcnn", (40,)), ("svm", (8,)), ("adarl", (2, 400, 300))])
def test_lazy_builders_pickle_and_build_their_family(name, shape):
    import torch

    spec = pickle.loads(pickle.dumps(registry.get(name)))
    cfg = spec.config(preset="reduced" if name == "adarl" else None)
    model = spec.build(cfg, InputInfo(shape, n_classes=4, n_domains=2))
    if spec.backend == "torch":
        assert isinstance(model, torch.nn.Module)
    else:
        assert hasattr(model, "fit")
    assert pickle.loads(pickle.dumps(spec.build)) == spec.build


def test_family_modules_reexport_their_spec_configs():
    from serray.models import adarl, adarl_spec, baselines, baselines_spec

    assert baselines.MLP_CONFIG is baselines_spec.MLP_CONFIG
    assert adarl.DEFAULT_CONFIG is adarl_spec.ADARL_CONFIG and adarl.REDUCED_PRESET is adarl_spec.ADARL_REDUCED_PRESET
    assert registry.get("adarl").default_config == adarl_spec.ADARL_CONFIG


def test_every_spec_module_is_discovered_without_a_central_list():
    from pathlib import Path

    import serray.models

    folder = Path(serray.models.__file__).parent
    on_disk = sorted(f"serray.models.{p.stem}" for p in folder.glob("*_spec.py"))
    assert registry._family_modules() == on_disk and "serray.models.mtl_cnn_spec" in on_disk
    assert {"svm", "logreg", "mlp", "dcnn", "cnn_lstm", "adarl", "mtl_cnn"} <= set(registry.names())


def test_a_scikit_learn_run_imports_neither_torch_nor_ray(synth_copy):
    """`serray train svm` runs in this process: no torch model and no Ray, so neither is imported."""
    code = (
        "import sys\n"
        "from serray.training.run import train_run\n"
        "from serray.training.spec import RunSpec\n"
        f"res = train_run(RunSpec({str(synth_copy)!r}, 'svm', features='egemaps', protocol='kfold', k=3))\n"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules), round(res.pooled['ua'], 3) > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] True", out.stdout + out.stderr
