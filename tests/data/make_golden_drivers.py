"""Write ``golden_drivers_v1.npz``: fixed-seed outputs of every fold-training driver.

Run once, from the repository root, with the code *before* the fold executor
(``serray.training.executor``) replaced the drivers' own fold loops:

    RAY_AUTH_MODE=disabled python tests/data/make_golden_drivers.py

``tests/test_golden_drivers.py`` compares today's outputs with the file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

import _golden_drivers as g  # noqa: E402


def main() -> None:
    import ray
    import torch

    from serray.models import registry
    from serray.raycluster import init_ray

    w = g.make_workdir(Path(tempfile.mkdtemp()) / "w")
    g.install_loader(g.manifest())
    init_ray(num_cpus=2)
    out: dict[str, np.ndarray] = {}
    try:
        for model in registry.names():
            for parallel in (False, True):
                torch.set_num_threads(1)
                out.update(g.train_runs(w, model, parallel))
        for part in (g.seeds, g.tune, g.nested, g.intermediate):
            torch.set_num_threads(1)
            out.update(part(w))
    finally:
        ray.shutdown()
    out["fingerprint"] = np.array(g.fingerprint())
    np.savez_compressed(g.GOLDEN, **out)
    print(f"wrote {len(out)} arrays to {g.GOLDEN} ({g.GOLDEN.stat().st_size} bytes) on {g.fingerprint()}")


if __name__ == "__main__":
    main()
