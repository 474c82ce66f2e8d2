"""A learnable mixture of diagonal Gaussians over the whole thought block."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions.transforms import ReshapeTransform

from ltm.priors.base import Prior


class MixtureOfGaussians(Prior):
    """p(z) = sum_c w_c N(z; mu_c, diag(sigma_c^2)), components over the flattened (N*D) block.

    Uses Pyro's `MixtureOfDiagNormals`, which has a pathwise `rsample`; the KL to a Gaussian guide
    has no closed form, so the ELBO falls back to a Monte-Carlo estimate of that term.

    Args:
        num_components: Mixture components C.
        init_spread: Standard deviation of the random initial component means.
    """

    def __init__(self, num_latents: int, latent_dim: int, num_components: int = 4,
                 init_spread: float = 1.0):
        super().__init__(num_latents, latent_dim)
        flat = num_latents * latent_dim
        self.locs = nn.Parameter(init_spread * torch.randn(num_components, flat))  # (C, N*D)
        self.log_scales = nn.Parameter(torch.zeros(num_components, flat))  # (C, N*D)
        self.logits = nn.Parameter(torch.zeros(num_components))  # (C,)

    def forward(self, context=None) -> dist.TorchDistribution:
        return diagonal_mixture(self.locs, self.log_scales.exp(), self.logits, self.event_shape)


def diagonal_mixture(locs: torch.Tensor, scales: torch.Tensor, logits: torch.Tensor,
                     event_shape: torch.Size) -> dist.TorchDistribution:
    """A mixture of C diagonal Gaussians over the flattened block, reshaped to `event_shape`.

    Args:
        locs: Component means (C, N*D).
        scales: Component scales (C, N*D).
        logits: Component log-weights (C,).
        event_shape: The thought shape (N, D).
    """
    flat = dist.MixtureOfDiagNormals(locs, scales, logits)
    return dist.TransformedDistribution(flat, [ReshapeTransform(flat.event_shape, event_shape)])
