"""PonderLM-2: the ELBO is the cross-entropy, Jacobi converges to the sequential thoughts, the
KV-cache decode equals recomputation, and it trains."""

from __future__ import annotations

import pytest
import torch

from ltm.core.errors import ConfigError
from ltm.inference import EmptyGuide, LatentELBO
from ltm.ponder.ponderlm2 import PonderLM2, PonderLM2Options
from tests.ponder.helpers import (
    VOCAB,
    T,
    assert_cache_matches_recompute,
    assert_elbo_is_cross_entropy,
    batch,
    tiny_decoder,
    train_losses,
)


@pytest.mark.parametrize("thoughts", [1, 2])
def test_elbo_equals_summed_cross_entropy(thoughts):
    assert_elbo_is_cross_entropy(PonderLM2(tiny_decoder(), thoughts=thoughts, jacobi_sweeps=2), batch())


def test_thoughts_are_a_deterministic_site():
    import pyro.poutine as poutine

    family = PonderLM2(tiny_decoder(), thoughts=2)
    trace = poutine.trace(family.model).get_trace(batch())
    site = trace.nodes["thoughts"]
    assert site["infer"].get("_deterministic") and tuple(site["value"].shape) == (3, T, 2, 32)


@pytest.mark.parametrize("thoughts,window", [(1, None), (2, None), (2, 3)])
def test_jacobi_converges_to_the_sequential_thoughts(thoughts, window):
    family = PonderLM2(tiny_decoder(window=window), thoughts=thoughts).eval()
    with torch.no_grad():
        for p in family.decoder.blocks.parameters():  # larger weights: a slower contraction
            p.mul_(3.0)
        x = family.token_inputs(batch()[:, :-1])  # (B, T, D)
        exact = family.exact_thoughts(x)  # (B, T, K, D)
        n_slots = T * thoughts
        dist = [float((family.jacobi_thoughts(x, j) - exact).norm()) for j in range(n_slots + 1)]
    assert all(b <= a + 1e-5 for a, b in zip(dist[:-1], dist[1:], strict=True)), dist  # non-increasing
    assert dist[-1] < 1e-5 and dist[-1] < 1e-3 * dist[0] and dist[-1] < 1e-3 * dist[1], dist


@pytest.mark.parametrize("prefill", ["jacobi", "sequential"])
@pytest.mark.parametrize("thoughts,window", [(1, None), (2, None), (2, 3)])
def test_kv_cache_decode_equals_recomputation(prefill, thoughts, window):
    family = PonderLM2(tiny_decoder(window=window), thoughts=thoughts, prefill=prefill)
    assert_cache_matches_recompute(family, batch()[:, :-1], prompt=4)


def test_random_sweeps_per_training_step():
    family = PonderLM2(tiny_decoder(), thoughts=1, jacobi_sweeps=0, max_jacobi_sweeps=3)
    family.train()
    assert {family.sweeps() for _ in range(64)} == {0, 1, 2, 3}
    family.eval()
    assert family.sweeps() == 3


@pytest.mark.parametrize("embed_scale", ["published", "rmsnorm"])
def test_gradients_flow_through_every_pass(embed_scale):
    family = PonderLM2(tiny_decoder(), thoughts=1, jacobi_sweeps=2, embed_scale=embed_scale)
    LatentELBO().differentiable_loss(family.model, EmptyGuide(), batch()).backward()
    assert (family.token_norm is None) == (embed_scale == "published")
    assert all(p.grad is not None for p in family.parameters())


def test_trains():
    losses = train_losses(PonderLM2(tiny_decoder(), thoughts=1, jacobi_sweeps=1, max_jacobi_sweeps=2))
    assert losses[-1] < losses[0] - 0.3, losses


def test_eval_mode_scores_with_the_exact_thoughts():
    torch.manual_seed(0)
    family = PonderLM2(tiny_decoder(), thoughts=2, jacobi_sweeps=1, max_jacobi_sweeps=None)
    tokens = batch()
    family.eval()
    exact = torch.nn.functional.cross_entropy(family.full_logits(tokens[:, :-1]).reshape(-1, VOCAB),
                                              tokens[:, 1:].reshape(-1), reduction="sum")
    loss = LatentELBO().differentiable_loss(family.model, EmptyGuide(), tokens)
    torch.testing.assert_close(loss, exact, rtol=1e-5, atol=1e-4)
    family.train()  # training uses J = 1 sweep: an approximation, not the exact score
    approx = LatentELBO().differentiable_loss(family.model, EmptyGuide(), tokens)
    assert abs(approx.item() - exact.item()) > 1e-4


def test_published_embed_scale_gives_unit_rms_inputs_at_init():
    torch.manual_seed(0)
    decoder = tiny_decoder(vocab_size=4096)
    D = decoder.cfg.d_model
    family = PonderLM2(decoder, thoughts=1, embed_scale="published")
    assert family.token_norm is None and family.embed_multiplier == pytest.approx((2.5 * D) ** 0.5)
    w = family.decoder.embed.weight
    assert float(w.detach().std()) == pytest.approx((2 / (5 * D)) ** 0.5, rel=0.05)  # trunc-normal at 3 sigma
    assert float(w.detach().abs().max()) <= 3 * (2 / (5 * D)) ** 0.5 + 1e-6
    x = family.token_inputs(torch.arange(4096)[None])  # (1, V, D)
    assert float(x.detach().pow(2).mean().sqrt()) == pytest.approx(1.0, abs=0.03)
    with torch.no_grad():
        family.decoder.embed.weight.mul_(2.0)  # a fixed multiplier, not a norm: the RMS follows
    doubled = family.token_inputs(torch.arange(4096)[None]).detach()  # (1, V, D)
    assert float(doubled.pow(2).mean().sqrt()) == pytest.approx(2.0, abs=0.06)


def test_rmsnorm_embed_scale_gives_unit_rms_inputs_whatever_the_embedding():
    family = PonderLM2(tiny_decoder(), thoughts=1, embed_scale="rmsnorm")
    with torch.no_grad():
        family.decoder.embed.weight.mul_(7.0)
    x = family.token_inputs(torch.arange(VOCAB)[None])  # (1, V, D)
    torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(1, VOCAB), rtol=1e-3, atol=1e-3)


def test_unknown_embed_scale_is_refused():
    with pytest.raises(ValueError, match="embed_scale"):
        PonderLM2(tiny_decoder(), embed_scale="sqrt")


def test_defaults_follow_the_published_recipe():
    options = PonderLM2Options()
    assert (options.jacobi_sweeps, options.max_jacobi_sweeps, options.embed_scale) == (2, 3, "published")
    assert not options.thought_skip
    family = PonderLM2(tiny_decoder(), thoughts=1).train()
    assert family.token_norm is None
    assert {family.sweeps() for _ in range(64)} == {2, 3}  # J drawn from {2, 3} per step


@pytest.mark.parametrize("thoughts", [1, 2])
def test_thought_skip_adds_the_token_input_and_stays_exact(thoughts):
    family = PonderLM2(tiny_decoder(), thoughts=thoughts, thought_skip=True)
    x = family.token_inputs(batch()[:, :-1])  # (B, T, D)
    z = torch.randn(x.shape[0], T, thoughts, x.shape[-1])  # (B, T, K, D)
    slots = family.slot_inputs(x, z).view(x.shape[0], T, thoughts + 1, -1)
    torch.testing.assert_close(slots[:, :, 0], x)
    torch.testing.assert_close(slots[:, :, 1:], z + x[:, :, None])
    assert_cache_matches_recompute(family, batch()[:, :-1], prompt=4)
    family.eval()
    with torch.no_grad():
        exact = family.exact_thoughts(x)
        torch.testing.assert_close(family.jacobi_thoughts(x, T * thoughts), exact, rtol=1e-4, atol=1e-5)


def test_embed_scale_none_feeds_the_embedding_as_it_is():
    """With the pretrained decoder's own inputs and no thought, PonderLM-2 is that decoder."""
    decoder = tiny_decoder()
    family = PonderLM2(decoder, thoughts=0, embed_scale="none")
    tokens = torch.randint(0, decoder.cfg.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.allclose(family.full_logits(tokens), decoder(tokens), atol=1e-6)
    with pytest.raises(ConfigError, match="embed_scale must be one of published, rmsnorm, none"):
        PonderLM2(tiny_decoder(), embed_scale="scaled")
