"""Priors over latent thoughts, selectable by registry name or `module:Class` path.

Installed as `ltm.priors` (the folder stays at the top of the repository); it imports only
`ltm.core`. A new prior is one file here (a `Prior` subclass) and one line in `PRIORS`.
"""

from __future__ import annotations

if __name__ != "ltm.priors":  # the folder priors/ installs as ltm.priors: one name only
    raise ImportError(f"this folder is ltm's priors package: import it as ltm.priors, not as "
                      f"'{__name__}' (install ltm with: pip install -e .).")

from ltm.core.errors import ConfigError
from ltm.core.registry import resolve
from ltm.priors.base import Prior
from ltm.priors.degenerate import ContextDelta, DeltaPrior
from ltm.priors.flow import FlowPrior
from ltm.priors.learned_normal import LearnedNormal
from ltm.priors.mixture import MixtureOfGaussians
from ltm.priors.standard_normal import StandardNormal
from ltm.priors.vamp import VampPrior

PRIORS: dict[str, type[Prior]] = {
    "standard_normal": StandardNormal,
    "learned_normal": LearnedNormal,
    "mixture": MixtureOfGaussians,
    "delta": DeltaPrior,
    "context_delta": ContextDelta,
    "flow": FlowPrior,
    "vamp": VampPrior,
}


def build_prior(spec: str | type, num_latents: int, latent_dim: int, **kwargs) -> Prior:
    """Build a prior from a registry name (see `PRIORS`), a `module:Class` path, or a class."""
    cls = resolve(spec, PRIORS, "prior", Prior)
    prior = cls(num_latents, latent_dim, **kwargs)
    if not isinstance(prior, Prior):
        raise ConfigError(f"prior '{spec}' is a {type(prior).__name__}, not an ltm.priors.Prior; "
                          f"subclass ltm.priors.Prior.")
    return prior


__all__ = ["PRIORS", "Prior", "build_prior", "StandardNormal", "LearnedNormal",
           "MixtureOfGaussians", "DeltaPrior", "ContextDelta", "VampPrior", "FlowPrior"]
