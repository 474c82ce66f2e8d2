"""The MAP guide: a point per sequence, fitted by the fast inner loop."""

from __future__ import annotations

import pyro.distributions as dist

from ltm.inference.guides.base import LocalGuide, initial_loc


class DeltaGuide(LocalGuide):
    """q(z_i) = Delta(loc_i): a per-sequence MAP point, fitted on log p(x|z) + log p(z).

    That objective is log p(x, z) at one point, not a bound on log p(x): a point mass on continuous
    z has no density (its entropy is -inf, so its true ELBO is -inf). `has_density` is False: the
    fresh-noise ELBO and the importance-weighted bound are refused, and held-out text is scored
    prefix-predictively (p(continuation | prefix, z_MAP) with z_MAP fitted on the prefix).

    Args:
        init_loc: Starting point: a constant or "prior_mean".
    """

    has_density = False

    def __init__(self, init_loc: float | str = 0.0):
        super().__init__()
        self.init_loc = init_loc

    def init_locals(self, prior, tokens, start):
        return {"loc": initial_loc(prior, tokens.shape[0], self.init_loc)}  # (B, N, D)

    def distribution(self, tokens, prior):
        return dist.Delta(self.local("loc"), event_dim=2)
