"""Model families, the model registry and the model-family contract.

* :mod:`serray.models.registry`: ``get(name)``, ``names()``, :class:`~serray.models.registry.ModelSpec`;
  families register from their torch-free ``*_spec.py`` modules.
* :mod:`serray.models.contract`: what a model declares (inputs, auxiliary labels, stage
  plans) and receives (:class:`~serray.models.contract.Batch`), torch-free.
* :mod:`serray.models.layers`: shared torch layers and the contract's base class.

Submodules are imported on first use (importing this package imports no torch).
"""

from __future__ import annotations

__all__ = ["registry", "contract", "layers"]
