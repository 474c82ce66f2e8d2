"""A Normal whose reparameterised draw reuses one stored noise tensor."""

from __future__ import annotations

import pyro.distributions as dist
import torch


class FixedNoiseNormal(dist.Normal):
    """N(loc, scale) whose `rsample` returns loc + scale * eps for a fixed eps.

    Still a `Normal` to Pyro's KL registry, so the analytic KL applies unchanged. Used only by the
    option that reproduces the published code's single noise draw per batch.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor,
                 validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self.eps = eps

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape:
            raise ValueError("FixedNoiseNormal holds one noise draw; sample_shape must be ().")
        return self.loc + self.scale * self.eps

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return FixedNoiseNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape),
                                self.eps.expand(batch_shape))
