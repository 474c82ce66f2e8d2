"""The KL of a latent site split over its latent vectors: KL(q || p) per (sequence, vector).

The site "z" has event shape (N, D): N latent vectors of width D. When both q and p are
`Independent` over a base distribution of batch shape (B, ..., D) (each coordinate its own
distribution, as for the local Gaussian guide and the normal priors), the KL is a sum over
coordinates and splits exactly per vector. A prior that couples the vectors (a mixture or a flow
over the whole (N, D) event) has no such split: `kl_per_vector` then returns None.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, kl_divergence


def _base(fn):
    """The per-coordinate base distribution of an `Independent` (after Pyro's expand), else None."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


def kl_per_vector(q_fn, p_fn, value: torch.Tensor | None = None) -> torch.Tensor | None:
    """KL(q || p) per sequence and latent vector (B, N), or None when it does not split.

    Analytic where torch's registry has the pair, else the one-sample estimate
    log q(z) - log p(z) at `value` (the site's draw), summed over each vector's coordinates.

    Args:
        q_fn: The guide's distribution at the site, batch (B,), event (N, D) (or more dims).
        p_fn: The model's (prior's) distribution at the site, same shapes.
        value: The site's sampled value (B, N, D), for the Monte-Carlo fallback.
    """
    q, p = _base(q_fn), _base(p_fn)
    if q is q_fn or p is p_fn or q.batch_shape != p.batch_shape or q.event_shape or p.event_shape:
        return None  # not a product over coordinates of the same shape
    batch = q.batch_shape[0]
    try:
        per_coordinate = kl_divergence(q, p)  # (B, ..., D)
    except NotImplementedError:
        if value is None:
            return None
        per_coordinate = q.log_prob(value) - p.log_prob(value)  # (B, ..., D)
    return per_coordinate.sum(-1).reshape(batch, -1)  # (B, N)
