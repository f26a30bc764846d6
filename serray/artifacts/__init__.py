"""Kept fold models, exports and prediction on new audio.

* :mod:`serray.artifacts.fold_model` - the format of one kept fold model (weights in
  safetensors, numeric arrays in npz, ``model.json``; never pickle) and its loader;
* :mod:`serray.artifacts.keep` - ``serray train`` / ``seeds`` write their folds' models
  under ``W/models/<run>``;
* :mod:`serray.artifacts.predictor` - :func:`load` a kept-models or export folder and
  :meth:`Predictor.predict` audio files (``serray predict``);
* :mod:`serray.artifacts.export` - ``serray export``: a self-contained folder with a
  model card and checksums;
* :mod:`serray.artifacts.refit` - ``serray export --refit all-data``: each member
  retrained once on all its run's training data.
"""

from serray.artifacts.files import ArtifactError
from serray.artifacts.fold_model import FoldModel, read_fold_model, write_fold_model
from serray.artifacts.keep import feature_inputs, write_kept_models

__all__ = ["ArtifactError", "FoldModel", "read_fold_model", "write_fold_model", "feature_inputs", "write_kept_models",
           "load", "Predictor", "export_models"]


def __getattr__(name: str):
    """``load``, ``Predictor`` and ``export_models`` (imported on first use)."""
    if name in ("load", "Predictor"):
        from serray.artifacts import predictor

        return getattr(predictor, name)
    if name == "export_models":
        from serray.artifacts.export import export_models

        return export_models
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
