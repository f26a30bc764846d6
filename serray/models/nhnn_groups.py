"""NHNN's utterance groups: a dirichlet-process Gaussian mixture on standardised vectors, pruned.

:func:`fit_groups` standardises the training vectors (training mean and standard
deviation), fits scikit-learn's ``BayesianGaussianMixture`` with
``weight_concentration_prior_type="dirichlet_process"``, and keeps the components that
hold at least ``min_share`` of the training utterances by hard assignment (at least the
largest one). :meth:`DPGroups.posterior` renormalises the mixture's posterior over the
survivors, computed from the weighted log-likelihoods so that an utterance whose own
component was dropped still gets finite posteriors; the hard group of an utterance is the
survivor with the highest posterior (where a dropped component's members go). Groups are
numbered by their component's training share before pruning, largest first. In the
example the four vectors near -8 form a component of 4 % and join the survivor with the
higher posterior (the wider one near 8).

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (80, 2)), rng.normal(8, 1, (20, 2)), rng.normal(-8, 1, (4, 2))])
    >>> g = fit_groups(x, max_components=5, concentration=1.0, min_share=0.1, random_state=0)
    >>> g.n_groups, [round(s, 2) for s in g.shares]
    (2, [0.77, 0.23])
    >>> bool(np.allclose(g.posterior(x).sum(axis=1), 1.0))
    True
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["DPGroups", "fit_groups"]


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
        """``[N, G]`` posteriors over the surviving groups (rows sum to one)."""
        if len(x) == 0:
            return np.zeros((0, self.n_groups), dtype=np.float32)
        logp = self.mixture._estimate_weighted_log_prob(self._standardise(x))[:, self.survivors]
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """Hard group of every row: the survivor with the highest posterior."""
        return self.posterior(x).argmax(axis=1)

    def record(self, part: Any, aux_names: Mapping[str, Sequence[str]]) -> dict[str, Any]:
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


def _counts(codes: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """Known codes -> ``{name: count}`` (sorted by name; the code itself when unnamed)."""
    counts = Counter(int(c) for c in codes if c >= 0)
    label = (lambda c: str(names[c])) if len(names) else str
    return {label(c): int(n) for c, n in sorted(counts.items(), key=lambda kv: label(kv[0]))}


def fit_groups(
    x: np.ndarray, *, max_components: int = 10, concentration: float = 0.1, covariance: str = "full",
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
    hard = mixture.predict(xs)
    share = np.bincount(hard, minlength=mixture.n_components) / len(x)
    order = np.argsort(-share, kind="stable")
    survivors = np.asarray([k for k in order if share[k] >= min_share] or [order[0]], dtype=np.int64)
    groups = DPGroups(mean, scale, mixture, survivors, [], np.zeros(0, dtype=np.int64))
    groups.train_groups = groups.assign(x)
    groups.shares = (np.bincount(groups.train_groups, minlength=len(survivors)) / len(x)).tolist()
    return groups
