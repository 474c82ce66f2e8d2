"""PonderLM-2: the ELBO is the cross-entropy, Jacobi converges to the sequential thoughts, the
KV-cache decode equals recomputation, and it trains."""

from __future__ import annotations

import pytest
import torch

from ltm.inference import EmptyGuide, LatentELBO
from ltm.ponder.ponderlm2 import PonderLM2
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


def test_gradients_flow_through_every_pass():
    family = PonderLM2(tiny_decoder(), thoughts=1, jacobi_sweeps=2)
    LatentELBO().differentiable_loss(family.model, EmptyGuide(), batch()).backward()
    assert family.token_norm.weight.grad is not None
    assert all(p.grad is not None for p in family.decoder.parameters())


def test_trains():
    losses = train_losses(PonderLM2(tiny_decoder(), thoughts=1, jacobi_sweeps=1, max_jacobi_sweeps=2))
    assert losses[-1] < losses[0] - 0.3, losses


def test_eval_mode_scores_with_the_exact_thoughts():
    torch.manual_seed(0)
    family = PonderLM2(tiny_decoder(), thoughts=2, jacobi_sweeps=1)
    tokens = batch()
    family.eval()
    exact = torch.nn.functional.cross_entropy(family.full_logits(tokens[:, :-1]).reshape(-1, VOCAB),
                                              tokens[:, 1:].reshape(-1), reduction="sum")
    loss = LatentELBO().differentiable_loss(family.model, EmptyGuide(), tokens)
    torch.testing.assert_close(loss, exact, rtol=1e-5, atol=1e-4)
    family.train()  # training uses J = 1 sweep: an approximation, not the exact score
    approx = LatentELBO().differentiable_loss(family.model, EmptyGuide(), tokens)
    assert abs(approx.item() - exact.item()) > 1e-4
