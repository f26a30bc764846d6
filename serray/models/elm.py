"""Extreme learning machine (ELM): a random sigmoid hidden layer and ridge least-squares outputs.

Huang et al. (2006); the utterance-level classifier of paper 002 (after [22, 23]). The
hidden weights and biases are drawn once, uniformly in ``[-1, 1]``, from a seeded numpy
generator and never trained; only the output weights are fitted, in closed form:
``beta = (H^T H + ridge * I)^-1 H^T T`` with ``H = sigmoid(X W + b)`` and targets ``T``
coded ``+1`` for the true class and ``-1`` otherwise. The scores ``H beta`` are the
classifier's outputs (argmax = prediction). Pure numpy, no torch.

Scores as log-probabilities (:meth:`ELM.log_posteriors`, :func:`scores_to_log_posteriors`):
least squares onto targets ``t_c = 2 [y = c] - 1`` estimates the regression function
``E[t_c | x] = 2 P(c | x) - 1``, so ``q_c = (s_c + 1) / 2`` is the least-squares estimate of
the class posterior. It is not confined to ``[0, 1]``: ``q`` is floored smoothly
(``log q`` above :data:`POSTERIOR_FLOOR`, below it the tangent line of ``log q`` at the
floor, so the map is strictly increasing and finite for any score) and renormalised over
the classes. The result is a log-probability row (its softmax is a proper distribution,
the normalised posterior estimate) on the scale of a softmax model's log-probabilities,
so late fusion can average it with other models' softmax outputs; being a strictly
increasing map of every score, it keeps the ELM's decision (argmax).

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
    >>> elm = ELM(hidden=20, ridge=1e-3, seed=0).fit(x, np.array([0, 0, 1, 1]), n_classes=2)
    >>> elm.predict(x).tolist()
    [0, 0, 1, 1]
    >>> elm.scores(x).shape
    (4, 2)
    >>> np.exp(elm.log_posteriors(x)).sum(axis=1).round(6).tolist()
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["ELM", "POSTERIOR_FLOOR", "scores_to_log_posteriors"]

#: Posterior estimates below this continue on the tangent of ``log q`` (see the module docstring).
POSTERIOR_FLOOR = 1e-3


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def scores_to_log_posteriors(scores: np.ndarray, floor: float = POSTERIOR_FLOOR) -> np.ndarray:
    """Log-probabilities ``[N, C]`` (float32) from ELM scores on the ``+-1`` target coding.

    ``q = (s + 1) / 2``; ``log f(q) = log q`` for ``q >= floor``, else
    ``log floor + (q - floor) / floor`` (strictly increasing, continuous with its slope);
    then each row is normalised: ``log f(q) - logsumexp(log f(q))``.

    Example:
        >>> out = scores_to_log_posteriors(np.array([[0.6, -0.8, -1.5]]))  # q = 0.8, 0.1, -0.25
        >>> [round(float(v), 4) for v in np.exp(out[0])]
        [0.8889, 0.1111, 0.0]
    """
    q = (np.asarray(scores, dtype=np.float64) + 1.0) / 2.0
    low = q < floor
    logf = np.where(low, np.log(floor) + (q - floor) / floor, np.log(np.where(low, 1.0, q)))
    top = logf.max(axis=1, keepdims=True)
    norm = top + np.log(np.exp(logf - top).sum(axis=1, keepdims=True))
    return (logf - norm).astype(np.float32)


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

    def log_posteriors(self, x: np.ndarray) -> np.ndarray:
        """The scores as normalised log-probabilities ``[N, n_classes]`` (float32; module
        docstring); their argmax is :meth:`predict`'s."""
        if not self.fitted:
            raise RuntimeError("ELM.log_posteriors called before fit")
        return scores_to_log_posteriors(self._hidden(x) @ self.beta)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class index of every row of ``x``."""
        return self.scores(x).argmax(axis=1)
