"""NHNN's utterance groups: a dirichlet-process Gaussian mixture on standardised vectors, pruned.

:func:`fit_groups` standardises the training vectors (training mean and standard
deviation), fits scikit-learn's ``BayesianGaussianMixture`` with
``weight_concentration_prior_type="dirichlet_process"``, and keeps the components that
hold at least ``min_share`` of the training utterances by hard assignment (at least the
largest one). Posteriors are the paper's eq. 8, ``w_i N(x | mu_i, Sigma_i) / sum_l w_l
N(x | mu_l, Sigma_l)``, computed in log space from the fitted mixture's public
attributes (``weights_``, ``means_``, ``precisions_cholesky_``): :meth:`DPGroups.posterior`
takes them over the survivors only, so an utterance whose own component was dropped
still gets finite posteriors; the hard group of an utterance is the survivor with the
highest posterior (where a dropped component's members go). Groups are numbered by their
component's training share before pruning, largest first. In the example the four
vectors near -8 form a component of 4 % and join the survivor with the higher posterior
(the nearer one, near 0).

Covariance: ``diag`` by default. The paper's ``full`` (an 88 x 88 covariance, 3,916
parameters per component) is not estimable from EmoDB-sized training parts (about 430
utterances, 43 per component of 10): on every EmoDB LOSO fold the k-means start was a
fixed point of the variational updates (stopped "converged" after 2 iterations with the
10 initial clusters, 4-7 of them kept at 10 %; random starts: 4 iterations, 3-6 kept),
and on 400 synthetic 88-d vectors in two clusters (80/20) it returned 10 clusters of
10-20 % where ``diag`` converged to the two clusters. ``diag`` on the
EmoDB folds converged in 17-42 iterations to two groups (one on one fold). A fit whose
variational updates never leave their start (at most 2 iterations) is logged as a
warning, and so is one that does not converge within ``max_iter``.

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (80, 2)), rng.normal(8, 1, (20, 2)), rng.normal(-8, 1, (4, 2))])
    >>> g = fit_groups(x, max_components=5, concentration=1.0, min_share=0.1, random_state=0)
    >>> g.n_groups, [round(s, 2) for s in g.shares]
    (2, [0.81, 0.19])
    >>> bool(np.allclose(g.posterior(x).sum(axis=1), 1.0))
    True
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from sklearn.mixture import BayesianGaussianMixture

    from serray.training.data import SplitData

__all__ = ["DPGroups", "fit_groups", "weighted_log_density"]

log = logging.getLogger(__name__)


@dataclass
class DPGroups:
    """A fitted, pruned mixture (see the module docstring).

    Attributes:
        mean, scale: Training statistics of the standardisation ``[D]``.
        mixture: The fitted ``BayesianGaussianMixture``.
        survivors: Component index of every group (largest training share first).
        shares: Share of the training utterances in every group after reassignment.
        train_groups: Group of every training utterance.
    """

    mean: np.ndarray
    scale: np.ndarray
    mixture: Any
    survivors: np.ndarray
    shares: list[float]
    train_groups: np.ndarray

    @property
    def n_groups(self) -> int:
        """Number of surviving groups."""
        return len(self.survivors)

    @property
    def weights(self) -> list[float]:
        """The mixture weights of the survivors, renormalised to sum to one."""
        w = np.asarray(self.mixture.weights_, dtype=np.float64)[self.survivors]
        return (w / w.sum()).tolist()

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """``[N, G]`` posteriors over the surviving groups (eq. 8 over them; rows sum to one)."""
        if len(x) == 0:
            return np.zeros((0, self.n_groups), dtype=np.float32)
        logp = weighted_log_density(self.mixture, self._standardise(x))[:, self.survivors]
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """Hard group of every row: the survivor with the highest posterior."""
        return self.posterior(x).argmax(axis=1)

    def record(self, part: SplitData, aux_names: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """JSON-able summary: group count, weights, shares, and per group the training
        utterances, gender counts and ratio, and the speakers (utterances each).

        ``part`` is the training part the groups were fitted on (its ``aux`` codes of the
        roles ``gender`` and ``speaker`` are named with ``aux_names``; unknown codes are
        left out; a role missing from ``part`` is missing from the record).
        """
        groups = []
        for g in range(self.n_groups):
            members = self.train_groups == g
            info: dict[str, Any] = {"n_train": int(members.sum()), "share": self.shares[g], "weight": self.weights[g]}
            for role, key in (("gender", "gender"), ("speaker", "speakers")):
                codes = getattr(part, "aux", {}).get(role)
                if codes is not None:
                    info[key] = _counts(np.asarray(codes)[members], aux_names.get(role, ()))
            if "gender" in info:
                total = sum(info["gender"].values())
                info["gender_ratio"] = {k: v / total for k, v in info["gender"].items()} if total else {}
            groups.append(info)
        return {
            "n_groups": self.n_groups,
            "n_components": int(self.mixture.n_components),
            "converged": bool(self.mixture.converged_),
            "n_iter": int(self.mixture.n_iter_),
            "weights": self.weights,
            "shares": list(self.shares),
            "groups": groups,
        }


def weighted_log_density(mixture: BayesianGaussianMixture, x: np.ndarray) -> np.ndarray:
    """``[N, K]`` ``log w_k + log N(x | mu_k, Sigma_k)`` of a fitted scikit-learn Gaussian
    mixture, from its public attributes (``weights_``, ``means_``,
    ``precisions_cholesky_``; any ``covariance_type``).

    Example:
        >>> from sklearn.mixture import GaussianMixture
        >>> x = np.random.default_rng(0).normal(size=(50, 3))
        >>> gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(x)
        >>> logp = weighted_log_density(gm, x)
        >>> p = np.exp(logp - logp.max(axis=1, keepdims=True))
        >>> bool(np.allclose(p / p.sum(axis=1, keepdims=True), gm.predict_proba(x)))
        True
    """
    x = np.asarray(x, dtype=np.float64)
    means, chol = np.asarray(mixture.means_), np.asarray(mixture.precisions_cholesky_)
    k, d = means.shape
    kind = mixture.covariance_type
    if kind == "tied":
        chol = np.broadcast_to(chol, (k, d, d))
    elif kind == "diag":
        chol = np.stack([np.diag(c) for c in chol])
    elif kind == "spherical":
        chol = chol[:, None, None] * np.eye(d)[None]
    out = np.empty((len(x), k))
    for i in range(k):
        y = (x - means[i]) @ chol[i]  # whitened: precision = chol @ chol.T
        out[:, i] = np.log(np.diagonal(chol[i])).sum() - 0.5 * (y * y).sum(axis=1)
    return out - 0.5 * d * np.log(2 * np.pi) + np.log(np.asarray(mixture.weights_, dtype=np.float64))[None]


def _counts(codes: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """Known codes -> ``{name: count}`` (sorted by name; the code itself when unnamed)."""
    counts = Counter(int(c) for c in codes if c >= 0)
    label = (lambda c: str(names[c])) if len(names) else str
    return {label(c): int(n) for c, n in sorted(counts.items(), key=lambda kv: label(kv[0]))}


def fit_groups(
    x: np.ndarray, *, max_components: int = 10, concentration: float = 0.1, covariance: str = "diag",
    reg_covar: float = 1e-3, max_iter: int = 500, min_share: float = 0.1, random_state: int = 0,
) -> DPGroups:
    """Fit and prune the groups on the training vectors ``x`` ``[N, D]`` (see the module docstring).

    Raises:
        ValueError: Fewer than two training vectors, or non-finite values.
    """
    from sklearn.mixture import BayesianGaussianMixture

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"nhnn: the mixture needs >= 2 training vectors [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("nhnn: the cluster features (e.g. egemaps) contain non-finite values")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    xs = (x - mean) / scale
    mixture = BayesianGaussianMixture(
        n_components=min(int(max_components), len(x)), weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=float(concentration), covariance_type=covariance, reg_covar=float(reg_covar),
        max_iter=int(max_iter), random_state=int(random_state),
    ).fit(xs)
    _check_fit(mixture, xs.shape)
    hard = weighted_log_density(mixture, xs).argmax(axis=1)
    share = np.bincount(hard, minlength=mixture.n_components) / len(x)
    order = np.argsort(-share, kind="stable")
    survivors = np.asarray([k for k in order if share[k] >= min_share] or [order[0]], dtype=np.int64)
    groups = DPGroups(mean, scale, mixture, survivors, [], np.zeros(0, dtype=np.int64))
    groups.train_groups = groups.assign(x)
    groups.shares = (np.bincount(groups.train_groups, minlength=len(survivors)) / len(x)).tolist()
    return groups


def _check_fit(mixture: BayesianGaussianMixture, shape: tuple[int, int]) -> None:
    """Warn about a fit that did not converge, or whose updates never left their start."""
    if not mixture.converged_:
        log.warning("nhnn: the mixture did not converge within dp_max_iter=%d iterations; raise dp_max_iter", mixture.max_iter)
    elif mixture.n_iter_ <= 2 and mixture.n_components > 1:
        log.warning(
            "nhnn: the mixture stopped after %d iterations at its start (%d vectors, %d dimensions, covariance=%s): "
            "too few utterances for these covariances; use covariance=diag", mixture.n_iter_, shape[0], shape[1],
            mixture.covariance_type,
        )
