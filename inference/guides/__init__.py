"""Guides over the sequence-level thoughts, selectable by registry name or `module:Class` path.

A new guide is one file here (a `LocalGuide` subclass) and one line in `GUIDES`.
"""

from __future__ import annotations

from ltm.core.registry import resolve
from ltm.inference.guides.base import LocalGuide, check_guide_fits_prior, initial_loc
from ltm.inference.guides.delta import DeltaGuide
from ltm.inference.guides.gaussian import LocalGaussianGuide
from ltm.inference.guides.prior import EmptyGuide, PriorGuide

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
                         f"ltm.inference.LocalGuide; subclass ltm.inference.LocalGuide.")
    return guide


__all__ = ["GUIDES", "build_guide", "LocalGuide", "LocalGaussianGuide", "DeltaGuide", "PriorGuide",
           "EmptyGuide", "check_guide_fits_prior", "initial_loc"]
