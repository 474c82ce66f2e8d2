"""Priors over latent thoughts, selectable by registry name or `module:Class` path."""

from __future__ import annotations

from ltm.registry import resolve
from priors.base import Prior
from priors.degenerate import ContextDelta, DeltaPrior
from priors.learned_normal import LearnedNormal
from priors.mixture import MixtureOfGaussians
from priors.standard_normal import StandardNormal

PRIORS: dict[str, type[Prior]] = {
    "standard_normal": StandardNormal,
    "learned_normal": LearnedNormal,
    "mixture": MixtureOfGaussians,
    "delta": DeltaPrior,
    "context_delta": ContextDelta,
}


def build_prior(spec: str | type, num_latents: int, latent_dim: int, **kwargs) -> Prior:
    """Build a prior from a registry name (see `PRIORS`), a `module:Class` path, or a class."""
    cls = resolve(spec, PRIORS, "prior")
    prior = cls(num_latents, latent_dim, **kwargs)
    if not isinstance(prior, Prior):
        raise ValueError(f"prior '{spec}' is a {type(prior).__name__}, not a priors.Prior; "
                         f"subclass priors.Prior.")
    return prior


__all__ = ["PRIORS", "Prior", "build_prior", "StandardNormal", "LearnedNormal",
           "MixtureOfGaussians", "DeltaPrior", "ContextDelta"]
