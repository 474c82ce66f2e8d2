"""A Normal whose reparameterised draw reuses one stored noise tensor, and the one constructor the
guides use: a Normal that reads a frozen draw when there is one."""

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


def normal(loc: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor | None) -> dist.Normal:
    """N(loc, scale), whose draw is loc + scale * noise when a frozen `noise` is given (the
    published protocol's, the sampler's per-row draws), else a fresh one. Shapes as `loc`."""
    return dist.Normal(loc, scale) if noise is None else FixedNoiseNormal(loc, scale, noise)
