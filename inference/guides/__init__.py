"""Guides over the sequence-level thoughts, selectable by registry name or `module:Class` path.

A new guide is one file here (a `LocalGuide` subclass) and one line in `GUIDES`.
"""

from __future__ import annotations

import inspect

from ltm.core.errors import ConfigError
from ltm.core.registry import resolve
from ltm.inference.guides.amortized import AmortizedGuide
from ltm.inference.guides.base import LocalGuide, check_guide_fits_prior, initial_loc, pyro_guide
from ltm.inference.guides.delta import DeltaGuide
from ltm.inference.guides.flow import FlowGuide
from ltm.inference.guides.gaussian import LocalGaussianGuide
from ltm.inference.guides.langevin import LangevinGuide
from ltm.inference.guides.prior import EmptyGuide, PriorGuide
from ltm.inference.guides.semi_amortized import SemiAmortizedGuide

GUIDES: dict[str, type[LocalGuide]] = {
    "gaussian": LocalGaussianGuide,
    "delta": DeltaGuide,
    "prior": PriorGuide,
    "none": EmptyGuide,
    "flow": FlowGuide,
    "langevin": LangevinGuide,
    "amortized": AmortizedGuide,
    "semi_amortized": SemiAmortizedGuide,
}


def build_guide(spec: str | type, context: dict | None = None, **kwargs) -> LocalGuide:
    """Build a guide from a registry name (see `GUIDES`), a `module:Class` path, or a class.

    Args:
        spec: The guide.
        context: What the run knows that a guide with global parameters may need to build them:
            `vocab_size`, `num_latents`, `latent_dim`. Each key is passed only to a guide whose
            constructor takes it, and never over a keyword given in `kwargs`.
        **kwargs: The guide's own options (`--guide-kwargs`).
    """
    cls = resolve(spec, GUIDES, "guide", LocalGuide)
    accepted = inspect.signature(cls).parameters
    kwargs = {**{k: v for k, v in (context or {}).items() if k in accepted}, **kwargs}
    guide = cls(**kwargs)
    if not isinstance(guide, LocalGuide):
        raise ConfigError(f"guide '{spec}' is a {type(guide).__name__}, not an "
                          f"ltm.inference.LocalGuide; subclass ltm.inference.LocalGuide.")
    return guide


__all__ = ["GUIDES", "build_guide", "LocalGuide", "LocalGaussianGuide", "DeltaGuide", "PriorGuide",
           "EmptyGuide", "AmortizedGuide", "SemiAmortizedGuide", "check_guide_fits_prior", "initial_loc",
           "pyro_guide", "LangevinGuide", "FlowGuide"]
