"""serray: speech emotion recognition at scale on Ray."""
__version__ = "0.1.0"


def load(folder: str, *, runtime: str = "torch"):
    """A predictor of a run's kept fold models (``W/models/<run>``) or a ``serray export``
    folder: ``serray.load(DIR).predict(paths)`` (see :mod:`serray.artifacts.predictor`);
    ``runtime="onnx"`` scores with the graphs of ``serray export --onnx``."""
    from serray.artifacts import predictor

    return predictor.load(folder, runtime=runtime)
