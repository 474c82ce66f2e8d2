"""A Normal whose reparameterised draw reuses one stored noise tensor, and the one constructor the
guides use: a Normal that reads a frozen draw when there is one.

Under `noise_shard(offset, rows)` (data-parallel training) a fresh draw is made for all `rows`
sequences of the global batch and this process keeps its own rows, so a sequence's noise does
not depend on how the batch is split over processes.
"""

from __future__ import annotations

import contextlib

import pyro.distributions as dist
import torch
from torch.distributions.utils import _standard_normal

_SHARD: tuple[int, int] | None = None  # (first row of this process, rows of the global batch)


@contextlib.contextmanager
def noise_shard(offset: int, rows: int):
    """Draw every guide's fresh Gaussian noise for `rows` sequences and keep rows
    [offset, offset + local batch): the draws equal those of one process holding the whole batch."""
    global _SHARD
    previous, _SHARD = _SHARD, (offset, rows)
    try:
        yield
    finally:
        _SHARD = previous


def fresh_noise(shape: tuple[int, ...], device) -> torch.Tensor:
    """A standard-normal draw of `shape` (batch rows first); under `noise_shard`, this process's
    rows of the global batch's draw."""
    if _SHARD is None:
        return torch.randn(shape, device=device)
    offset, rows = _SHARD
    return torch.randn((rows,) + tuple(shape[1:]), device=device)[offset:offset + shape[0]]


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
    published protocol's, the sampler's per-row draws), else a fresh one (this process's rows of a
    global-batch draw under `noise_shard`). Shapes as `loc`, batch rows first."""
    if noise is not None:
        return FixedNoiseNormal(loc, scale, noise)
    if _SHARD is not None and loc.dim() >= 1:
        return ShardedNormal(loc, scale, *_SHARD)
    return dist.Normal(loc, scale)
