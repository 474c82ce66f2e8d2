"""The stochastic relaxation of PonderLM-2: an autoregressive Gaussian prior over thoughts, a local
posterior refined by the dual-rate inner loop."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO

from ltm.inference import DualRateOptimizer, InnerLoopConfig, LatentELBO, SlowConfig
from ltm.ponder.ponderlm2_stochastic import StochasticPonderLM2, ThoughtGuide, ThoughtSequence
from tests.ponder.helpers import T, batch, tiny_decoder


def test_one_pass_log_prob_is_the_autoregressive_density():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=T, thoughts=2, init_sigma=0.3)
    x = family.token_inputs(batch()[:, :-1])  # (B, T, D)
    prior = ThoughtSequence(family, x)
    z = prior.sample()  # (B, T*K, D), drawn slot by slot
    noise = z.view(3, T, 2, -1) - family.exact_thoughts_given(x, z)  # (B, T, K, D), prefix by prefix
    expected = torch.distributions.Normal(0.0, 0.3).log_prob(noise).sum((1, 2, 3))  # (B,)
    torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-5, atol=1e-3)


def test_elbo_with_the_thought_guide_matches_its_terms():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=T, thoughts=1)
    guide = ThoughtGuide()
    tokens = batch()
    guide.reset(family.prior, tokens.shape[0], family.initial_latents(tokens))
    guide.freeze_noise()
    loss = LatentELBO().differentiable_loss(family.model, guide, tokens)
    terms = LatentELBO().terms(family.model, guide, tokens)
    torch.testing.assert_close(loss, -terms.elbo.sum(), rtol=1e-5, atol=1e-3)
    pyro.set_rng_seed(0)
    assert torch.isfinite(TraceMeanField_ELBO().differentiable_loss(family.model, guide, tokens))


def test_inner_loop_improves_the_posterior_and_the_model_trains():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=T, thoughts=1)
    opt = DualRateOptimizer(family, ThoughtGuide(), InnerLoopConfig(steps=4, lr=0.05, reuse_noise=True),
                            SlowConfig(lr=1e-2, warmup_steps=0, max_steps=10, weight_decay=0.0))
    tokens = batch(4)
    results = [opt.step(tokens) for _ in range(10)]
    assert results[0].inner_losses[-1] < results[0].inner_losses[0]
    assert results[-1].loss < results[0].loss - 0.3, [r.loss for r in results]


def test_keeps_normed_embeddings_and_a_fixed_sweep_count():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=8, thoughts=1, jacobi_sweeps=5)
    assert family.token_norm is not None and family.max_jacobi_sweeps is None
