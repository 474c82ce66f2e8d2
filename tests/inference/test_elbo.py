"""The Pyro ELBO equals its hand computation: Gaussian KL analytic, Delta prior exact, MC fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ltm import LatentThoughtModel
from ltm.inference import DeltaGuide, LatentELBO, LocalGaussianGuide, PriorGuide
from ltm.inference.guides.base import pyro_guide
from ltm.priors import DeltaPrior
from tests.conftest import tiny_config


def _hand_nll(ltm, tokens, z):
    logits = ltm.decoder(tokens[:, :-1], latents=z)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                           reduction="sum")


def _fitted_gaussian_guide(ltm, tokens):
    guide = LocalGaussianGuide()
    guide.reset(ltm.prior, tokens)
    with torch.no_grad():  # a posterior away from the prior, so the KL is not trivially zero
        guide.locals["loc"].normal_()
        guide.locals["log_scale"].uniform_(-1.0, 0.5)
    guide.freeze_noise(ltm.prior, tokens)
    return guide


def test_gaussian_loss_equals_nll_plus_analytic_kl(tiny_ltm, tokens):
    with torch.no_grad():
        tiny_ltm.prior.loc.normal_(0, 0.3)
        tiny_ltm.prior.log_scale.uniform_(-0.5, 0.5)
    guide = _fitted_gaussian_guide(tiny_ltm, tokens)
    loc, scale = guide.locals["loc"], guide.locals["log_scale"].exp()
    z = loc + scale * guide.fixed_noise  # (B, N, D)
    p_loc, p_scale = tiny_ltm.prior.loc, tiny_ltm.prior.log_scale.exp()
    kl = (torch.log(p_scale / scale) + (scale**2 + (loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5).sum()
    expected = _hand_nll(tiny_ltm, tokens, z) + kl

    q = pyro_guide(guide, tiny_ltm.prior)
    pyro_loss = TraceMeanField_ELBO().differentiable_loss(tiny_ltm.model, q, tokens)
    terms = LatentELBO().terms(tiny_ltm.model, q, tokens)
    torch.testing.assert_close(pyro_loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(-terms.elbo.sum(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.kl.sum(), kl, rtol=1e-5, atol=1e-5)
    assert terms.reconstruction.shape == terms.kl.shape == (tokens.shape[0],)


def test_degenerate_prior_elbo_is_summed_cross_entropy(tokens):
    ltm = LatentThoughtModel.build(tiny_config(), DeltaPrior)
    with torch.no_grad():
        ltm.prior.value.normal_()
    guide = PriorGuide()
    guide.reset(ltm.prior, tokens)
    z = ltm.prior.value.expand(tokens.shape[0], 4, 8)
    expected = _hand_nll(ltm, tokens, z)
    loss = TraceMeanField_ELBO().differentiable_loss(ltm.model, pyro_guide(guide, ltm.prior), tokens)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    terms = LatentELBO().terms(ltm.model, pyro_guide(guide, ltm.prior), tokens)
    assert torch.equal(terms.kl, torch.zeros_like(terms.kl))
    loss.backward()
    assert ltm.prior.value.grad.abs().sum() > 0  # the learned point is trained through the decoder


def test_delta_guide_is_map_objective(tiny_ltm, tokens):
    guide = DeltaGuide()
    guide.reset(tiny_ltm.prior, tokens)
    with torch.no_grad():
        guide.locals["loc"].normal_()
    z = guide.locals["loc"]
    expected = _hand_nll(tiny_ltm, tokens, z) - tiny_ltm.prior().log_prob(z).sum()
    loss = LatentELBO().differentiable_loss(tiny_ltm.model, pyro_guide(guide, tiny_ltm.prior), tokens)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_mixture_prior_falls_back_to_monte_carlo_kl(tokens):
    ltm = LatentThoughtModel.build(tiny_config(), "mixture", num_components=3)
    guide = _fitted_gaussian_guide(ltm, tokens)
    q = guide.distribution(tokens, ltm.prior)
    z = q.rsample()  # fixed noise: the same draw every call
    expected = _hand_nll(ltm, tokens, z) + (q.log_prob(z) - ltm.prior().log_prob(z)).sum()
    for loss in (Trace_ELBO().differentiable_loss(ltm.model, pyro_guide(guide, ltm.prior), tokens),
                 -LatentELBO().terms(ltm.model, pyro_guide(guide, ltm.prior), tokens).elbo.sum()):
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_terms_average_particles(tiny_ltm, tokens):
    guide = _fitted_gaussian_guide(tiny_ltm, tokens)
    one = LatentELBO().terms(tiny_ltm.model, pyro_guide(guide, tiny_ltm.prior), tokens)
    four = LatentELBO(num_particles=4).terms(tiny_ltm.model, pyro_guide(guide, tiny_ltm.prior), tokens)
    torch.testing.assert_close(four.elbo, one.elbo)  # fixed noise: every particle is the same draw
