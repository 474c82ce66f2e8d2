"""Gaussian noise for the guides: a Normal that reuses one stored draw, and the handler that makes
a process's fresh draws the rows of the whole batch's draw.

    with ShardNoise(offset, rows):     # data parallel: this process holds rows [offset, offset+B)
        loss = elbo.differentiable_loss(family.model, pyro_guide(guide, family.prior), tokens)

Under `ShardNoise` (a Pyro effect handler at the latent site "z" and at the frozen-noise site) a
fresh Gaussian draw is made for all `rows` sequences of the global batch and this process keeps its
own rows, so a sequence's noise does not depend on how the batch is split over processes or
micro-batches. Applied in `DualRateOptimizer.step` and in `ltm.inference.data_parallel`.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions.utils import _standard_normal

from ltm.core.sites import LATENT_SITE

NOISE_SITE = "z_noise"  # the standard-normal draw a guide freezes for reuse (B, N, D)
_NOISE_SITES = (LATENT_SITE, NOISE_SITE)


class ShardedNormal(dist.Normal):
    """N(loc, scale) (batch rows first) whose noise is this process's rows of a global-batch draw."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, offset: int, rows: int,
                 validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self.offset, self.rows = offset, rows

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)  # (*S, B, ...)
        dim = len(sample_shape)
        full = shape[:dim] + (self.rows,) + shape[dim + 1:]  # (*S, B_global, ...)
        eps = _standard_normal(full, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps.narrow(dim, self.offset, shape[dim]) * self.scale

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return ShardedNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape),
                             self.offset, self.rows)


class FixedNoiseNormal(dist.Normal):
    """N(loc, scale) whose `rsample` returns loc + scale * eps for a fixed eps.

    Still a `Normal` to Pyro's KL registry, so the analytic KL applies unchanged. Used by the option
    that reproduces the published code's single noise draw per batch, the published protocol and
    the sampler's per-row draws.
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
    published protocol's, the sampler's per-row draws), else a fresh one. Shapes as `loc`, batch
    rows first."""
    return dist.Normal(loc, scale) if noise is None else FixedNoiseNormal(loc, scale, noise)


def standard_noise(shape: tuple[int, ...], device) -> torch.Tensor:
    """A fresh standard-normal draw of `shape` (batch rows first), drawn at the frozen-noise site
    (so that under `ShardNoise` it is this process's rows of the global batch's draw)."""
    zero = torch.zeros(shape, device=device)
    return pyro.sample(NOISE_SITE, dist.Normal(zero, 1.0).to_event(len(shape)))


class ShardNoise(Messenger):
    """Draw the fresh Gaussian noise of the latent and frozen-noise sites for the `rows` sequences
    of the global batch, and keep rows [offset, offset + local batch) (see the module docstring).

    Only sites that are sampled (not observed, not replayed) and only plain `Normal` draws with
    batch rows first are affected; a frozen draw (`FixedNoiseNormal`) is left as it is.
    """

    def __init__(self, offset: int, rows: int):
        super().__init__()
        self.offset, self.rows = offset, rows

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["name"] not in _NOISE_SITES or msg["is_observed"] \
                or msg["value"] is not None:
            return
        wrappers, fn = [], msg["fn"]
        while hasattr(fn, "base_dist"):  # Independent, TransformedDistribution (the flow guide)
            wrappers.append(fn)
            fn = fn.base_dist
        if type(fn) is not dist.Normal or fn.loc.dim() == 0:
            return
        fn = ShardedNormal(fn.loc, fn.scale, self.offset, self.rows)
        for wrapper in reversed(wrappers):  # shallow copies: the guide's own objects stay as they are
            wrapper = copy.copy(wrapper)
            wrapper.base_dist = fn
            fn = wrapper
        msg["fn"] = fn
