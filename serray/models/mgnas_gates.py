"""Gates of paper 001's multi-domain model (sec. 4.3): softmax gates over experts and the
hard-concrete connectivity of its NAS module.

* :class:`HardConcreteGate` (Louizos et al. 2018; paper eq. 9): in training
  ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log kappa) / beta)``,
  ``xi = min(1, max(0, s (zeta - gamma) + gamma))`` (exactly 0 or 1 with positive
  probability); in evaluation the deterministic
  ``xi = min(1, max(0, sigmoid(log kappa) (zeta - gamma) + gamma))``.
  :meth:`HardConcreteGate.expected_open` is the L0 penalty
  ``sum sigmoid(log kappa - beta log(-gamma / zeta))``.
* :class:`NASConnections` (eq. 8): ``u_i = sum_j xi_ij W_ij v_j`` for every domain, with
  one transition ``W_ij`` per pair of experts shared by the domains and one gate
  ``xi_ij`` per domain.
* :class:`SoftmaxGates` (eq. 7): ``g_k(x) = softmax(W_k x)`` over the experts, one per
  domain (or one shared).

Example:
    >>> import torch
    >>> g = HardConcreteGate((2, 3), init=0.0).eval()
    >>> [round(v, 4) for v in g().tolist()[0]]
    [0.95, 0.95, 0.95]
    >>> gates = SoftmaxGates(in_dim=4, n_experts=3, n_gates=2)
    >>> tuple(gates(torch.randn(5, 4)).sum(dim=2).shape)
    (5, 2)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["HardConcreteGate", "NASConnections", "SoftmaxGates"]


class HardConcreteGate(nn.Module):
    """Hard-concrete gates of any shape with learnable ``log kappa`` (see the module docstring).

    Args:
        shape: Shape of the gate tensor.
        beta: Temperature (paper 0.9).
        gamma, zeta: Stretch interval (paper -0.1 and 2; ``gamma < 0 < 1 < zeta``).
        init: Initial ``log kappa`` of every gate.
        lr_scale: ``log kappa = lr_scale * raw`` with the parameter ``raw``: with Adam(W)
            ``log kappa`` moves ``lr_scale`` times as fast as the weights (a gate needs
            ``log kappa`` to fall by about 3 to close, i.e. thousands of steps at lr 1e-3).
    """

    def __init__(self, shape: Sequence[int], beta: float = 0.9, gamma: float = -0.1, zeta: float = 2.0, init: float = 1.0,
                 lr_scale: float = 1.0) -> None:
        super().__init__()
        if not (beta > 0 and gamma < 0 and zeta > 1):
            raise ValueError(f"hard-concrete gate needs nas_beta > 0, nas_gamma < 0 and nas_zeta > 1, got {beta}, {gamma}, {zeta}")
        if not lr_scale > 0:
            raise ValueError(f"nas_lr_scale must be > 0, got {lr_scale}")
        self.scale = float(lr_scale)
        self.raw = nn.Parameter(torch.full(tuple(shape), float(init) / self.scale))
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)

    @property
    def log_kappa(self) -> Tensor:
        """``log kappa`` of every gate (``lr_scale * raw``)."""
        return self.raw * self.scale

    def forward(self) -> Tensor:
        """A sample of the gates (training) or their deterministic value (evaluation)."""
        if self.training:
            u = torch.rand_like(self.log_kappa).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_kappa) / self.beta)
        else:
            s = torch.sigmoid(self.log_kappa)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def open_probability(self) -> Tensor:
        """Probability that each gate is non-zero in training, ``P(xi > 0)``."""
        return torch.sigmoid(self.log_kappa - self.beta * math.log(-self.gamma / self.zeta))

    def expected_open(self) -> Tensor:
        """Sum of the probabilities that each gate is non-zero (the L0 penalty)."""
        return self.open_probability().sum()


class NASConnections(nn.Module):
    """Domain-specific sparse connections between expert outputs (eq. 8).

    Args:
        n_experts: ``M`` (inputs and outputs).
        dim: Width of every expert output ``v_j`` and every ``u_i``.
        n_domains: Domains, each with its own ``M x M`` gates.
        beta, gamma, zeta, init, lr_scale: Of the :class:`HardConcreteGate`.
    """

    def __init__(self, n_experts: int, dim: int, n_domains: int, *, beta: float = 0.9, gamma: float = -0.1,
                 zeta: float = 2.0, init: float = 1.0, lr_scale: float = 1.0) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.empty(n_experts, n_experts, dim, dim))  # W_ij: v_j -> u_i
        nn.init.kaiming_uniform_(self.transitions.view(-1, dim), a=math.sqrt(5))
        self.gates = HardConcreteGate((n_domains, n_experts, n_experts), beta, gamma, zeta, init, lr_scale)

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``v`` ``[B, M, d]`` -> ``(u [B, K, M, d] for every domain, xi [K, M, M])``."""
        xi = self.gates()
        t = torch.einsum("ijed,bjd->bije", self.transitions, v)  # W_ij v_j
        return torch.einsum("kij,bije->bkie", xi, t), xi


class SoftmaxGates(nn.Module):
    """``n_gates`` softmax gates ``softmax(W_k x)`` over ``n_experts`` -> ``[B, n_gates, M]``."""

    def __init__(self, in_dim: int, n_experts: int, n_gates: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_gates * n_experts)
        self.n_gates, self.n_experts = n_gates, n_experts

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return torch.softmax(self.linear(x).view(-1, self.n_gates, self.n_experts), dim=2)
