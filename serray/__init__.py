"""serray: speech emotion recognition at scale on Ray."""
__version__ = "0.1.0"


def load(folder: str):
    """A predictor of a run's kept fold models (``W/models/<run>``) or a ``serray export``
    folder: ``serray.load(DIR).predict(paths)`` (see :mod:`serray.artifacts.predictor`)."""
    from serray.artifacts import predictor

    return predictor.load(folder)
