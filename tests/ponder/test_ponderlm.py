"""PonderLM (v1): ELBO = summed cross-entropy, cached decoding = recomputation, it trains."""

from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO

from ltm.inference import InnerLoopConfig, LatentELBO, SlowConfig
from ltm.inference.dual_rate import DualRateOptimizer
from ltm.inference.guides import EmptyGuide
from ltm.models import Decoder, DecoderConfig
from ltm.ponder.ponderlm import PonderLM
from ltm.sampling import SamplingConfig, decode
from ltm.training.build import build_model
from ltm.training.config import TrainConfig

VOCAB = 40


def tiny(passes: int = 2) -> PonderLM:
    cfg = DecoderConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, d_model=32)
    return PonderLM(Decoder(cfg), passes)


def hand_ce(fam: PonderLM, tokens: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the S-pass recurrence, written out independently."""
    dec, inputs, targets = fam.decoder, tokens[:, :-1], tokens[:, 1:]
    x = dec.embed(inputs)  # (B, T, D)
    for _ in range(fam.passes):
        x = x + dec(embeds=x).softmax(-1) @ dec.embed.weight  # (B, T, D)
    logits = dec(embeds=x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum")


@pytest.mark.parametrize("passes", [0, 1, 3])
def test_elbo_equals_summed_cross_entropy(passes):
    fam = tiny(passes)
    tokens = torch.randint(0, VOCAB, (3, 13))  # (B, T+1)
    expected = hand_ce(fam, tokens)
    loss = LatentELBO().differentiable_loss(fam.model, EmptyGuide(), tokens)
    pyro_loss = TraceMeanField_ELBO().differentiable_loss(fam.model, EmptyGuide(), tokens)
    assert torch.allclose(loss, expected, atol=1e-5, rtol=1e-6)
    assert torch.allclose(pyro_loss, expected, atol=1e-5, rtol=1e-6)
    terms = LatentELBO().terms(fam.model, EmptyGuide(), tokens)
    assert torch.allclose(terms.kl, torch.zeros(3))


def test_thoughts_are_deterministic_sites():
    fam = tiny(3)
    tokens = torch.randint(0, VOCAB, (2, 9))  # (B, T+1)
    trace = pyro.poutine.trace(fam.model).get_trace(tokens)
    sites = [n for n in trace.nodes if n.startswith("ponder_")]
    assert sites == ["ponder_0", "ponder_1", "ponder_2"]
    assert trace.nodes["ponder_0"]["value"].shape == (2, 8, 32)
    assert torch.equal(fam.prior(torch.zeros(32)).sample(), torch.zeros(32))


def test_kv_cache_decode_equals_recomputation():
    fam = tiny(3).eval()
    tokens = torch.randint(0, VOCAB, (2, 12))  # (B, T)
    full = fam.full_logits(tokens)  # (B, T, V)
    logits, state = fam.prefill(tokens[:, :5], max_len=12)
    steps = [logits]
    for t in range(5, 12):
        logits, state = fam.decode_step(tokens[:, t], state)
        steps.append(logits)
    cached = torch.stack(steps, dim=1)  # (B, 8, V)
    assert torch.allclose(cached, full[:, 4:], atol=1e-5)
    assert len(state.caches) == 4 and state.length == 12


def test_trains_on_a_repeated_batch():
    fam = tiny(2)
    tokens = torch.randint(0, VOCAB, (4, 13))  # (B, T+1)
    opt = DualRateOptimizer(fam, EmptyGuide(), InnerLoopConfig(steps=0),
                            SlowConfig(lr=3e-3, warmup_steps=0, decay_steps=30, weight_decay=0.0))
    losses = [opt.step(tokens).loss for _ in range(30)]
    assert losses[-1] < losses[0] - 0.5


def test_builder_and_sampler():
    cfg = TrainConfig.from_dict({"model": "ponderlm", "d_model": 32, "n_layer": 2, "n_head": 2,
                                 "block_size": 32, "ponderlm": {"passes": 2}})
    fam = build_model(cfg, VOCAB)
    assert fam.passes == 2 and fam.decoder.cfg.n_latent == 0 and fam.cost_per_token == 3.0
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    cached = decode(fam, prompts, SamplingConfig(max_new_tokens=6, seed=3))
    fresh = decode(fam, prompts, SamplingConfig(max_new_tokens=6, seed=3, use_cache=False))
    assert cached == fresh and all(len(row) == 6 for row in cached)
