"""Guides, the ELBO with its terms, the fast inner loop, the dual-rate (fast local / slow global)
optimiser, and the honest bounds. Installed as `ltm.inference` (the folder stays at the top of the
repository); it imports only `ltm.core` and `ltm.priors`."""

from __future__ import annotations

if __name__ != "ltm.inference":  # the folder inference/ installs as ltm.inference: one name only
    raise ImportError(f"this folder is ltm's inference package: import it as ltm.inference, not as "
                      f"'{__name__}' (install ltm with: pip install -e .).")

from ltm.inference.dual_rate import DualRateOptimizer, EarlyInference, SlowConfig, StepResult
from ltm.inference.elbo import ElboTerms, LatentELBO
from ltm.inference.guides import (
    GUIDES,
    DeltaGuide,
    EmptyGuide,
    LocalGaussianGuide,
    LocalGuide,
    PriorGuide,
    build_guide,
    check_guide_fits_prior,
    initial_loc,
    pyro_guide,
)
from ltm.inference.inner_loop import InnerLoopConfig, fit_local
from ltm.inference.kl_control import KLControl

__all__ = ["GUIDES", "build_guide", "LocalGuide", "LocalGaussianGuide", "DeltaGuide", "PriorGuide",
           "EmptyGuide", "check_guide_fits_prior", "initial_loc", "pyro_guide", "LatentELBO", "ElboTerms",
           "InnerLoopConfig", "fit_local", "DualRateOptimizer", "SlowConfig", "StepResult",
           "EarlyInference", "KLControl"]
