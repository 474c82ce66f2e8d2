"""Free bits, KL warm-up and early inference: the training objective and budget they promise."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ltm import DecoderConfig, LatentThoughtModel
from ltm.core.errors import ConfigError
from ltm.inference import (
    DualRateOptimizer,
    EarlyInference,
    InnerLoopConfig,
    KLControl,
    LatentELBO,
    LocalGaussianGuide,
    SlowConfig,
    build_guide,
    fit_local,
)
from ltm.inference.guides.base import pyro_guide
from ltm.training.config import TrainConfig

CFG = DecoderConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, d_model=16, n_latent=3, d_latent=4)


def _fitted(steps=4, prior="standard_normal"):
    torch.manual_seed(0)
    family = LatentThoughtModel.build(CFG, prior)
    guide = LocalGaussianGuide(init_scale=0.6)
    tokens = torch.randint(0, 40, (5, 17))  # (B, T+1)
    fit_local(family, guide, tokens, InnerLoopConfig(steps=steps, lr=0.3))
    return family, guide, tokens


def test_the_kl_splits_exactly_per_latent_vector():
    family, guide, tokens = _fitted()
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
    loc, scale = guide.locals["loc"], guide.locals["log_scale"].exp()  # (B, N, D)
    by_hand = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)  # (B, N)
    assert terms.kl_per_latent.shape == (5, 3)
    assert torch.allclose(terms.kl_per_latent, by_hand, atol=1e-5)
    assert torch.allclose(terms.kl_per_latent.sum(-1), terms.kl, atol=1e-5)


def test_free_bits_keeps_every_vector_at_or_above_its_floor():
    family, guide, tokens = _fitted(steps=0)
    loc = torch.zeros(5, 3, 4)  # (B, N, D): vector 0 at the prior, 1 a little off, 2 far off
    loc[:, 1], loc[:, 2] = 0.3, 1.5
    guide.locals = {"loc": loc.requires_grad_(True), "log_scale": torch.zeros(5, 3, 4)}
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
    mean_kl = terms.kl_per_latent.mean(0).detach()  # (N,)
    floor = float(mean_kl.median())  # one vector below the floor, one at it, one above
    control = KLControl(free_bits=floor)
    kl_term = control.kl_term(terms, step=0)
    per_vector = torch.maximum(mean_kl, torch.tensor(floor))  # what each vector costs in the loss
    assert (per_vector >= floor - 1e-7).all()
    assert kl_term.item() == pytest.approx(5 * per_vector.sum().item(), rel=1e-6)
    assert kl_term.item() > terms.kl.sum().item()  # the floor charges the vector below it
    below = int(mean_kl.argmin())
    (grad,) = torch.autograd.grad(kl_term, guide.locals["loc"])  # (B, N, D)
    assert grad[:, below].abs().max() == 0  # under the floor: free, no gradient pulls it in
    assert grad[:, int(mean_kl.argmax())].abs().max() > 0
    # at q = prior every vector has KL 0 and costs exactly the floor
    at_prior = LocalGaussianGuide()  # starts at N(0, I)
    fit_local(family, at_prior, tokens, InnerLoopConfig(steps=0))
    terms = LatentELBO().terms(family.model, pyro_guide(at_prior, family.prior), tokens)
    assert KLControl(free_bits=0.25).kl_term(terms, 0).item() == pytest.approx(5 * 3 * 0.25)


def test_free_bits_needs_a_prior_that_splits():
    family, guide, tokens = _fitted(prior="mixture")
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
    assert terms.kl_per_latent is None
    with pytest.raises(ValueError, match="factorise over the vectors"):
        KLControl(free_bits=0.1).kl_term(terms, 0)


def test_kl_warmup_beta_follows_its_schedule():
    control = KLControl(warmup_steps=4)
    assert [control.beta(s) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert KLControl().beta(0) == 1.0 and not KLControl().active
    family, guide, tokens = _fitted()
    opt = DualRateOptimizer(family, guide, InnerLoopConfig(steps=1), SlowConfig(warmup_steps=0),
                            kl_control=control)
    weights = [opt.step(tokens).kl_weight for _ in range(3)]
    assert weights == [0.0, 0.25, 0.5]
    resumed = DualRateOptimizer(family, guide, InnerLoopConfig(steps=1), SlowConfig(warmup_steps=0),
                                kl_control=control)
    resumed.scheduler.load_state_dict(opt.scheduler.state_dict())
    assert resumed.step(tokens).kl_weight == 0.75  # the schedule resumes with the run


def test_beta_scales_the_kl_of_the_objective():
    family, guide, tokens = _fitted()
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
    half = KLControl(warmup_steps=2).loss(terms, step=1)
    assert half.item() == pytest.approx((-terms.reconstruction.sum() + 0.5 * terms.kl.sum()).item(), rel=1e-6)


def test_early_inference_runs_the_longer_budget_first():
    family, guide, tokens = _fitted()
    opt = DualRateOptimizer(family, guide, InnerLoopConfig(steps=2), SlowConfig(warmup_steps=0),
                            early=EarlyInference(steps=5, until=2))
    results = [opt.step(tokens) for _ in range(4)]
    assert [len(r.inner_losses) for r in results] == [5, 5, 2, 2]
    assert [r.inner_steps for r in results] == [5, 5, 2, 2]


@pytest.mark.parametrize("flag", [{"free_bits": 0.5}, {"kl_warmup_steps": 10}, {"early_inner_steps": 8}])
def test_remedies_are_refused_for_a_family_without_a_latent(flag):
    with pytest.raises(ConfigError, match="family vanilla has none"):
        TrainConfig.from_dict({"model": "vanilla", **flag})
    TrainConfig.from_dict({"model": "ltm", **flag})  # accepted where there is a KL


def test_remedies_are_off_by_default():
    cfg = TrainConfig()
    assert not cfg.kl.active and cfg.early.budget(0, 4) == 4


@pytest.mark.parametrize("guide", ["delta", "langevin"])
def test_kl_remedies_are_refused_for_a_guide_without_a_density(guide, tiny_ltm):
    with pytest.raises(ValueError, match="act on KL\\(q \\|\\| p\\), which guide .* does not have"):
        DualRateOptimizer(tiny_ltm, build_guide(guide), kl_control=KLControl(free_bits=1.0))


def test_a_diverged_step_reports_a_finite_perplexity_bound():
    """A step whose loss is past exp's range (an unanchored inner loop can reach thousands of nats
    of KL at step 1) reports the capped bound instead of crashing the metrics line."""
    from ltm.inference.dual_rate import StepResult

    result = StepResult(loss=4952.4, reconstruction=5.1, kl=4947.3)
    assert math.isfinite(result.perplexity_bound) and result.perplexity_bound == math.exp(700.0)
    assert StepResult(loss=2.0, reconstruction=2.0, kl=0.0).perplexity_bound == math.exp(2.0)
