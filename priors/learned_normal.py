"""A diagonal Gaussian prior with learnable location and scale."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ltm.priors.base import Prior


class LearnedNormal(Prior):
    """p(z) = N(loc, diag(scale^2)), loc and log-scale learned by the slow optimiser.

    Args:
        init_scale: Starting scale of every coordinate.
    """

    def __init__(self, num_latents: int, latent_dim: int, init_scale: float = 1.0):
        super().__init__(num_latents, latent_dim)
        self.loc = nn.Parameter(torch.zeros(num_latents, latent_dim))  # (N, D)
        self.log_scale = nn.Parameter(torch.full((num_latents, latent_dim), float(init_scale)).log())

    def forward(self, context=None) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(2)
