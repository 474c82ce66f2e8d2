"""Guides, the ELBO with its terms, and the dual-rate (fast local / slow global) optimiser."""

from __future__ import annotations

from inference.dual_rate import DualRateOptimizer, SlowConfig, StepResult
from inference.elbo import ElboTerms, LatentELBO
from inference.guide import LocalGuide, check_guide_fits_prior, initial_loc
from inference.guides import DeltaGuide, EmptyGuide, LocalGaussianGuide, PriorGuide
from inference.inner_loop import InnerLoopConfig, fit_local
from ltm.registry import resolve

GUIDES: dict[str, type[LocalGuide]] = {
    "gaussian": LocalGaussianGuide,
    "delta": DeltaGuide,
    "prior": PriorGuide,
    "none": EmptyGuide,
}


def build_guide(spec: str | type, **kwargs) -> LocalGuide:
    """Build a guide from a registry name (see `GUIDES`), a `module:Class` path, or a class."""
    guide = resolve(spec, GUIDES, "guide")(**kwargs)
    if not isinstance(guide, LocalGuide):
        raise ValueError(f"guide '{spec}' is a {type(guide).__name__}, not an "
                         f"inference.LocalGuide; subclass inference.LocalGuide.")
    return guide


__all__ = ["GUIDES", "build_guide", "LocalGuide", "LocalGaussianGuide", "DeltaGuide", "PriorGuide",
           "EmptyGuide", "check_guide_fits_prior", "initial_loc", "LatentELBO", "ElboTerms",
           "InnerLoopConfig", "fit_local",
           "DualRateOptimizer", "SlowConfig", "StepResult"]
