"""Extreme learning machine (ELM): a random sigmoid hidden layer and ridge least-squares outputs.

Huang et al. (2006); the utterance-level classifier of paper 002 (after [22, 23]). The
hidden weights and biases are drawn once, uniformly in ``[-1, 1]``, from a seeded numpy
generator and never trained; only the output weights are fitted, in closed form:
``beta = (H^T H + ridge * I)^-1 H^T T`` with ``H = sigmoid(X W + b)`` and targets ``T``
coded ``+1`` for the true class and ``-1`` otherwise. The scores ``H beta`` are the
classifier's outputs (argmax = prediction). Pure numpy, no torch.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
    >>> elm = ELM(hidden=20, ridge=1e-3, seed=0).fit(x, np.array([0, 0, 1, 1]), n_classes=2)
    >>> elm.predict(x).tolist()
    [0, 0, 1, 1]
    >>> elm.scores(x).shape
    (4, 2)
"""

from __future__ import annotations

import numpy as np

__all__ = ["ELM"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class ELM:
    """Extreme learning machine classifier (see the module docstring).

    Args:
        hidden: Number of random hidden units (>= 1).
        ridge: Ridge strength on the output weights (> 0).
        seed: Seed of the random hidden layer.

    Raises:
        ValueError: ``hidden < 1`` or ``ridge <= 0``.
    """

    def __init__(self, hidden: int = 120, ridge: float = 1.0, seed: int = 0) -> None:
        if int(hidden) < 1:
            raise ValueError(f"elm_hidden must be >= 1, got {hidden}")
        if not float(ridge) > 0:
            raise ValueError(f"elm_ridge must be > 0, got {ridge}")
        self.hidden, self.ridge, self.seed = int(hidden), float(ridge), int(seed)
        self.weights: np.ndarray | None = None
        self.bias: np.ndarray | None = None
        self.beta: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.beta is not None

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(np.asarray(x, dtype=np.float64) @ self.weights + self.bias)

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> "ELM":
        """Draw the hidden layer for ``x``'s width and solve the output weights.

        Args:
            x: Inputs ``[N, D]``.
            y: Class indices ``[N]`` in ``0 .. n_classes - 1``.
            n_classes: Output width (default ``max(y) + 1``); a class absent from ``y``
                gets target -1 everywhere, so it is (almost) never predicted.

        Raises:
            ValueError: Empty or mismatched inputs.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if x.ndim != 2 or len(x) == 0 or len(x) != len(y):
            raise ValueError(f"ELM.fit needs x [N, D] and y [N] with N > 0, got {x.shape} and {y.shape}")
        k = int(n_classes if n_classes is not None else y.max() + 1)
        rng = np.random.default_rng(self.seed)
        self.weights = rng.uniform(-1.0, 1.0, size=(x.shape[1], self.hidden))
        self.bias = rng.uniform(-1.0, 1.0, size=self.hidden)
        h = self._hidden(x)
        targets = -np.ones((len(y), k))
        targets[np.arange(len(y)), y] = 1.0
        gram = h.T @ h + self.ridge * np.eye(self.hidden)
        self.beta = np.linalg.solve(gram, h.T @ targets)
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Output scores ``[N, n_classes]`` (float32).

        Raises:
            RuntimeError: Called before :meth:`fit`.
        """
        if not self.fitted:
            raise RuntimeError("ELM.scores called before fit")
        return (self._hidden(x) @ self.beta).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class index of every row of ``x``."""
        return self.scores(x).argmax(axis=1)
