"""Guides that infer nothing: q = p, and the empty guide of deterministic thoughts."""

from __future__ import annotations

import torch

from ltm.inference.guides.base import LocalGuide


class PriorGuide(LocalGuide):
    """q = p: no inference. The only valid guide for a degenerate (Delta) prior, where it makes
    the KL exactly zero; with a stochastic prior it is the no-inference baseline."""

    fits_degenerate_prior = True

    def distribution(self, tokens, prior):
        return prior()


class EmptyGuide(LocalGuide):
    """A guide with no sites, for models whose thoughts are all deterministic (`pyro.deterministic`):
    the pondering families. Nothing to fit; the ELBO is the token log-likelihood exactly."""

    fits_degenerate_prior = True

    def forward(self, tokens: torch.Tensor, prior=None) -> None:
        return None
