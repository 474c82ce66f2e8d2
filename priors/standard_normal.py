"""The LTM paper's prior: independent standard normals."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from ltm.priors.base import Prior


class StandardNormal(Prior):
    """p(z) = N(0, I) over the (N, D) thought block; no parameters."""

    def __init__(self, num_latents: int, latent_dim: int):
        super().__init__(num_latents, latent_dim)
        self.register_buffer("zeros", torch.zeros(num_latents, latent_dim), persistent=False)

    def forward(self, context=None) -> dist.TorchDistribution:
        return dist.Normal(self.zeros, torch.ones_like(self.zeros)).to_event(2)
