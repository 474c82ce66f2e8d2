"""The MAP guide: a point per sequence, fitted by the fast inner loop."""

from __future__ import annotations

import pyro.distributions as dist

from ltm.inference.guides.base import LocalGuide, initial_loc


class DeltaGuide(LocalGuide):
    """q(z_i) = Delta(loc_i): a per-sequence MAP point. The ELBO becomes log p(x|z) + log p(z).

    Args:
        init_loc: Starting point: a constant or "prior_mean".
    """

    def __init__(self, init_loc: float | str = 0.0):
        super().__init__()
        self.init_loc = init_loc

    def init_locals(self, prior, batch_size, start):
        return {"loc": initial_loc(prior, batch_size, self.init_loc)}  # (B, N, D)

    def distribution(self):
        return dist.Delta(self.locals["loc"], event_dim=2)
