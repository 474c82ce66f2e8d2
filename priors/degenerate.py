"""A point-mass prior: the thought is a deterministic (learned) value, KL to itself is zero."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ltm.priors.base import Prior


class DeltaPrior(Prior):
    """p(z) = Delta(v) with a learned point v (N, D).

    Degenerate: the only guide that gives a finite ELBO is q = p (guide name "prior"); then the KL
    is zero and the ELBO equals the summed token log-likelihood exactly.
    """

    is_degenerate = True

    def __init__(self, num_latents: int, latent_dim: int):
        super().__init__(num_latents, latent_dim)
        self.value = nn.Parameter(torch.zeros(num_latents, latent_dim))  # (N, D)

    def forward(self, context=None) -> dist.TorchDistribution:
        return dist.Delta(self.value, event_dim=2)


class ContextDelta(Prior):
    """p(thought | context) = Delta(f(context)): the prior of the deterministic pondering families.

    The thought is a deterministic function of its context (e.g. PonderLM-2's last hidden state),
    so the model writes it with `pyro.deterministic`; calling the prior gives that Delta. Pair it
    with the empty guide (guide name "none"): the KL is zero and the ELBO is the summed token
    log-likelihood exactly.
    """

    is_degenerate = True
    token_level = True

    def forward(self, context: torch.Tensor | None = None) -> dist.TorchDistribution:
        if context is None:
            raise ValueError("ContextDelta is a prior over a thought given its context; pass context.")
        return dist.Delta(context, event_dim=1)
