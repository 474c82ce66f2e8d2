"""Amortised and semi-amortised guides on the topic corpus, where the answer is known."""

from __future__ import annotations

import pytest
import torch

from ltm.inference import InnerLoopConfig, build_guide
from ltm.inference.bounds import fresh_noise_elbo
from tests.conftest import train_on_topics

EVAL = dict(lr=0.3)  # the inner loop of training, at every evaluation budget


@pytest.fixture(scope="session")
def topic_vae(topic_corpus):
    """A plain VAE: the amortised guide, K=0 in training."""
    return train_on_topics(topic_corpus[0], "amortized", inner_steps=0)


@pytest.fixture(scope="session")
def topic_semi(topic_corpus):
    """The semi-amortised guide, K=4 in training (gradient stopped at the refined parameters)."""
    return train_on_topics(topic_corpus[0], "semi_amortized", inner_steps=4)


def topic_accuracy(means: torch.Tensor, topics: torch.Tensor) -> float:
    """Nearest-centroid topic accuracy of posterior means (S, N*D): centroids from the first
    half of the sequences, scored on the second."""
    half = means.shape[0] // 2
    fit, held = slice(0, half), slice(half, None)
    centroids = torch.stack([means[fit][topics[fit] == k].mean(0) for k in range(4)])  # (4, N*D)
    return (torch.cdist(means[held], centroids).argmin(1) == topics[held]).float().mean().item()


def test_the_amortised_guide_at_k0_recovers_the_topics(topic_vae, topic_corpus):
    _, test, topics = topic_corpus
    topic_vae.fit_local(test, steps=0)
    with torch.no_grad():
        means, _ = topic_vae.guide.encode(test)  # (256, N, D): one encoder pass, no inner step
    accuracy = topic_accuracy(means.flatten(1), topics)
    assert accuracy >= 0.9, f"nearest-centroid topic accuracy {accuracy:.2f} < 0.90"


def test_the_amortised_guide_ignores_inner_steps(topic_vae, topic_corpus):
    _, test, _ = topic_corpus
    assert topic_vae.guide.local_parameters() == []
    at = [fresh_noise_elbo(topic_vae.family, topic_vae.guide, test[:64], InnerLoopConfig(steps=k, **EVAL),
                           seed=1).neg_elbo for k in (0, 8)]
    assert at[0] == at[1]  # same seed, nothing to fit: the same bound


def test_semi_amortised_at_k4_is_as_good_as_local_at_k16(topic_semi, topic_ltm, topic_corpus):
    _, test, _ = topic_corpus
    held = list(test[:128].split(32))
    semi = fresh_noise_elbo(topic_semi.family, topic_semi.guide, held, InnerLoopConfig(steps=4, **EVAL),
                            num_draws=4)
    local = fresh_noise_elbo(topic_ltm.family, topic_ltm.guide, held, InnerLoopConfig(steps=16, **EVAL),
                             num_draws=4)
    assert semi.neg_elbo <= local.neg_elbo, (semi.neg_elbo, local.neg_elbo)


def test_semi_amortised_starts_at_the_encoder_and_refines(topic_semi, topic_corpus):
    _, test, _ = topic_corpus
    guide = topic_semi.guide
    topic_semi.fit_local(test[:32], steps=0)
    with torch.no_grad():
        loc, log_scale = guide.encode(test[:32])  # (32, N, D) each
    torch.testing.assert_close(guide.locals["loc"], loc)
    torch.testing.assert_close(guide.locals["log_scale"], log_scale)
    held = list(test[:128].split(32))
    start, refined = (fresh_noise_elbo(topic_semi.family, guide, held, InnerLoopConfig(steps=k, lr=0.05),
                                       num_draws=4).neg_elbo for k in (0, 32))
    assert refined < start, (start, refined)  # the fast steps improve on the encoder's guess


def test_stopped_gradient_trains_the_encoder_on_its_own_elbo(tiny_ltm, tokens):
    from ltm.inference import DualRateOptimizer

    guide = build_guide("semi_amortized", {"vocab_size": 37, "num_latents": 4, "latent_dim": 8})
    opt = DualRateOptimizer(tiny_ltm, guide, InnerLoopConfig(steps=2))
    opt.fit_local(tokens)
    guide.detach_locals()
    extra = guide.slow_step_loss(tiny_ltm, tokens, opt.elbo)
    assert extra.item() == 0.0  # a zero-valued carrier of the encoder's gradient
    extra.backward()
    assert all(p.grad is None for p in tiny_ltm.parameters())  # nothing reaches the decoder or prior
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in guide.encoder.parameters())


def test_unrolled_fit_backpropagates_into_the_encoder(tiny_ltm, tokens):
    from ltm.inference import DualRateOptimizer

    context = {"vocab_size": 37, "num_latents": 4, "latent_dim": 8}
    guide = build_guide("semi_amortized", context, unroll=True)
    with pytest.raises(ValueError, match="unroll=True differentiates through plain gradient steps; "
                                         "set the fast optimizer to 'sgd'"):
        DualRateOptimizer(tiny_ltm, guide, InnerLoopConfig(steps=2))
    opt = DualRateOptimizer(tiny_ltm, guide, InnerLoopConfig(steps=2, optimizer="sgd", lr=0.1))
    opt.fit_local(tokens)
    assert guide.locals["loc"].grad_fn is not None  # still a function of the encoder
    assert guide.slow_step_loss(tiny_ltm, tokens, opt.elbo) is None
    (-opt.terms(tokens).elbo.sum()).backward()
    grads = [p.grad for p in guide.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_guide_built_for_another_shape_is_refused(tiny_ltm, tokens):
    from ltm.inference import DualRateOptimizer

    guide = build_guide("amortized", {"vocab_size": 37, "num_latents": 2, "latent_dim": 8})
    with pytest.raises(ValueError, match=r"built for thoughts of shape \(2, 8\) but the prior "
                                         r"LearnedNormal has event shape \(4, 8\)"):
        DualRateOptimizer(tiny_ltm, guide)


def test_the_encoder_refuses_tokens_outside_its_vocabulary(tiny_ltm):
    guide = build_guide("amortized", {"vocab_size": 10, "num_latents": 4, "latent_dim": 8})
    tokens = torch.full((2, 5), 12)
    guide.reset(tiny_ltm.prior, tokens)
    with pytest.raises(ValueError, match="token id 12 is outside the encoder's vocabulary of 10"):
        guide.distribution(tokens, tiny_ltm.prior)


def test_a_frozen_draw_is_honoured_without_local_tensors(tiny_ltm, tokens):
    guide = build_guide("amortized", {"vocab_size": 37, "num_latents": 4, "latent_dim": 8})
    guide.reset(tiny_ltm.prior, tokens)
    noise = torch.randn(tokens.shape[0], 4, 8)  # (B, N, D)
    guide.freeze_noise(tiny_ltm.prior, tokens, noise)
    with torch.no_grad():
        loc, log_scale = guide.encode(tokens)  # (B, N, D) each
        q = guide.distribution(tokens, tiny_ltm.prior)
        torch.testing.assert_close(q.rsample(), loc + log_scale.exp() * noise)
