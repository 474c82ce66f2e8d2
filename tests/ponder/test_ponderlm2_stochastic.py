"""The stochastic relaxation of PonderLM-2: an autoregressive Gaussian prior over thoughts, a local
posterior refined by the dual-rate inner loop."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from ltm.eval.scoring import continuation_logprob, sequence_logprob
from ltm.inference import DualRateOptimizer, InnerLoopConfig, LatentELBO, SlowConfig
from ltm.inference.bounds import prefix_predictive_perplexity
from ltm.inference.guides.base import pyro_guide
from ltm.ponder.ponderlm2_stochastic import StochasticPonderLM2, ThoughtGuide, ThoughtSequence
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)
from tests.ponder.helpers import T, batch, tiny_decoder

pytestmark = pytest.mark.usefixtures("one_thread")


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
    guide.reset(family.prior, tokens, family.initial_latents(tokens))
    guide.freeze_noise(family.prior, tokens)
    loss = LatentELBO().differentiable_loss(family.model, pyro_guide(guide, family.prior), tokens)
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
    torch.testing.assert_close(loss, -terms.elbo.sum(), rtol=1e-5, atol=1e-3)
    pyro.set_rng_seed(0)
    q = pyro_guide(guide, family.prior)
    assert torch.isfinite(TraceMeanField_ELBO().differentiable_loss(family.model, q, tokens))


def test_inner_loop_improves_the_posterior_and_the_model_trains():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=T, thoughts=1)
    opt = DualRateOptimizer(family, ThoughtGuide(), InnerLoopConfig(steps=4, lr=0.05, reuse_noise=True),
                            SlowConfig(lr=1e-2, warmup_steps=0, decay_steps=10, weight_decay=0.0))
    tokens = batch(4)
    results = [opt.step(tokens) for _ in range(10)]
    assert results[0].inner_losses[-1] < results[0].inner_losses[0]
    assert results[-1].loss < results[0].loss - 0.3, [r.loss for r in results]


def test_keeps_normed_embeddings_and_a_fixed_sweep_count():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=8, thoughts=1, jacobi_sweeps=5)
    assert family.token_norm is not None and family.max_jacobi_sweeps is None


def test_prefix_predictive_fits_the_prefix_and_draws_the_continuations_thoughts():
    """It failed before: the prefix's thoughts went to `full_logits` as a sequence-level latent (and
    a prefix was shorter than the site's fixed length). Now q is fitted on the prefix's thoughts and
    the continuation's thoughts are drawn from the prior given their context."""
    family = StochasticPonderLM2(tiny_decoder(), seq_len=T, thoughts=2).eval()
    tokens, P = batch(), 5
    for k in (0, 2):
        score = prefix_predictive_perplexity(family, ThoughtGuide(), tokens, P,
                                             InnerLoopConfig(steps=k, lr=0.01), num_samples=3)
        assert math.isfinite(score.nll) and score.tokens == 3 * (T + 1 - P) and score.num_samples == 3
    lp, _ = continuation_logprob(family, ThoughtGuide(), [1, 2, 3], [4, 5], InnerLoopConfig(steps=2, lr=0.01))
    assert math.isfinite(lp) and lp < 0
    assert math.isfinite(sequence_logprob(family, ThoughtGuide(), [1, 2, 3, 4], InnerLoopConfig(steps=1)))


def test_the_continuations_thoughts_are_prior_draws_given_the_prefixs():
    family = StochasticPonderLM2(tiny_decoder(), seq_len=T, thoughts=2, init_sigma=0.5).eval()
    tokens = batch(16, t=8)  # (B, T+1)
    x = family.token_inputs(tokens[:, :-1])  # (B, T, D)
    given = torch.randn(16, 3 * 2, x.shape[-1])  # thoughts of the first 3 tokens
    z = family.prior_thoughts(x, given)  # (B, T, K, D)
    torch.testing.assert_close(z[:, :3].reshape(given.shape), given)
    noise = (z - family.exact_thoughts_given(x, z.reshape(16, -1, x.shape[-1])))[:, 3:] / 0.5
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05  # N(0, 1)
    family.prior.log_sigma.data.fill_(math.log(1e-6))  # sigma -> 0: PonderLM-2's exact thoughts
    exact = family.exact_thoughts(x)[:, :3].reshape(given.shape)  # (B, 3*K, D)
    with torch.no_grad():
        torch.testing.assert_close(family.full_logits(tokens[:, :-1], exact),
                                   family.full_logits(tokens[:, :-1]), rtol=1e-4, atol=1e-4)
