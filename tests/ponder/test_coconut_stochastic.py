"""Stochastic Coconut: an autoregressive Gaussian prior over the thought slots only (checked against a
slot-by-slot reference), a masked local posterior refined by the inner loop, Coconut's thoughts as
its mean, and Coconut's cached decode."""

from __future__ import annotations

import pyro
import pytest
import torch

from ltm.inference import DualRateOptimizer, InnerLoopConfig, LatentELBO, SlowConfig
from ltm.inference.guides.base import pyro_guide
from ltm.models.decoder import Decoder
from ltm.ponder.coconut import Coconut
from ltm.ponder.coconut_stochastic import CoconutThoughtGuide, CoconutThoughtSequence, StochasticCoconut
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)
from tests.conftest import tiny_config
from tests.ponder.test_coconut import EOT, THOUGHT, with_thoughts

pytestmark = pytest.mark.usefixtures("one_thread")
L = 20  # block length of `with_thoughts` (T + 1)


def family(sigma: float = 0.3) -> StochasticCoconut:
    torch.manual_seed(0)
    return StochasticCoconut(Decoder(tiny_config(n_latent=0)), seq_len=L - 1, thought_id=THOUGHT, eot_id=EOT,
                             init_sigma=sigma)


def test_log_prob_is_the_slot_by_slot_density_and_ignores_other_positions():
    model = family()
    inputs = with_thoughts()[:, :-1]  # (B, T)
    prior = CoconutThoughtSequence(model, inputs)
    z = prior.sample()  # (B, T, D), drawn one rank at a time
    slots = prior.slots
    assert slots.sum() == 6 and torch.all(z[~slots] == 0)
    expected = torch.zeros(3)
    with torch.no_grad():
        for b, t in slots.nonzero().tolist():
            embeds = model.decoder.embed(inputs[b])  # (T, D)
            embeds = torch.where(slots[b, :, None], z[b], embeds)
            mean = model.decoder.hidden_states(embeds=embeds[None, :t])[0, -1]  # h of the prefix before t
            expected[b] += torch.distributions.Normal(mean, 0.3).log_prob(z[b, t]).sum()
        torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-5, atol=1e-3)
        moved = z + 5.0 * (~slots)[..., None]  # only non-slot entries change
        torch.testing.assert_close(CoconutThoughtSequence(model, inputs).log_prob(moved), expected,
                                   rtol=1e-5, atol=1e-3)


def test_its_mean_is_coconut_and_decoding_is_coconuts():
    model = family().eval()
    tokens = with_thoughts()
    coconut = Coconut(model.decoder, thought_id=THOUGHT, eot_id=EOT)
    start = model.initial_latents(tokens)  # (B, T, D): Coconut's deterministic thoughts
    with torch.no_grad():
        h = model.run_with(tokens[:, :-1], start)  # (B, T, D)
        torch.testing.assert_close(model.decoder.logits(h), coconut.exact_logits(tokens[:, :-1]), atol=1e-5,
                                   rtol=1e-5)
        logits, state = model.prefill(tokens[:, :4])
        steps = [logits]
        for t in range(4, tokens.shape[1]):
            logits, state = model.decode_step(tokens[:, t], state)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, 1), model.full_logits(tokens)[:, 3:], atol=1e-5,
                                   rtol=1e-5)


def test_the_guide_scores_slots_only_and_the_elbo_matches_its_terms():
    model = family()
    tokens = with_thoughts()
    guide = CoconutThoughtGuide()
    guide.reset(model.prior, tokens, model.initial_latents(tokens))
    q = guide.distribution(tokens, model.prior)
    z = q.rsample()  # (B, T, D)
    slots = model.prior.slots(tokens[:, :-1])
    torch.testing.assert_close(q.log_prob(z + 3.0 * (~slots)[..., None]), q.log_prob(z))
    guide.freeze_noise(model.prior, tokens)
    loss = LatentELBO().differentiable_loss(model.model, pyro_guide(guide, model.prior), tokens)
    terms = LatentELBO().terms(model.model, pyro_guide(guide, model.prior), tokens)
    torch.testing.assert_close(loss, -terms.elbo.sum(), rtol=1e-5, atol=1e-3)


def test_thought_and_eot_targets_are_not_scored():
    model = family()
    tokens = with_thoughts()
    trace = pyro.poutine.trace(model.model).get_trace(tokens)
    scored = trace.nodes["tokens"]["value"]  # (B, T): placed targets are ignored
    placed = (tokens[:, 1:] == THOUGHT) | (tokens[:, 1:] == EOT)
    assert torch.all(scored[placed] < 0) and torch.all(scored[~placed] >= 0)


def test_inner_loop_improves_the_posterior_and_the_model_trains():
    model = family()
    opt = DualRateOptimizer(model, CoconutThoughtGuide(), InnerLoopConfig(steps=4, lr=0.05, reuse_noise=True),
                            SlowConfig(lr=1e-2, warmup_steps=0, decay_steps=12, weight_decay=0.0))
    tokens = with_thoughts(4)
    results = [opt.step(tokens) for _ in range(12)]
    assert results[0].inner_losses[-1] < results[0].inner_losses[0]
    recon = [r.reconstruction for r in results]
    assert recon[-1] < recon[0] - 0.3, recon
