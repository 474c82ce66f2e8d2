"""Adaptive latent CoT: the (token, step) mask, ELBO = CE (+ router factor), decoding, halting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO

from ltm.inference import InnerLoopConfig, LatentELBO, SlowConfig
from ltm.inference.dual_rate import DualRateOptimizer
from ltm.inference.guides import EmptyGuide
from ltm.models import Decoder, DecoderConfig
from ltm.ponder.adaptive_cot import AdaptiveLatentCoT
from ltm.ponder.grid import GridCache, grid_mask
from ltm.sampling import SamplingConfig, decode
from ltm.training.build import build_model
from ltm.training.config import TrainConfig

VOCAB = 40


def tiny(**kwargs) -> AdaptiveLatentCoT:
    cfg = DecoderConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, d_model=32)
    return AdaptiveLatentCoT(Decoder(cfg), **kwargs)


def eager_router(fam: AdaptiveLatentCoT, bias: float = 1.0) -> AdaptiveLatentCoT:
    """Give the router varied continue probabilities, so that the mixture is not trivial."""
    with torch.no_grad():
        fam.router.proj.weight.normal_(0.0, 0.5)
        fam.router.proj.bias.fill_(bias)
    return fam


def optimizer(fam, steps: int, lr: float = 3e-3) -> DualRateOptimizer:
    return DualRateOptimizer(fam, EmptyGuide(), InnerLoopConfig(steps=0),
                             SlowConfig(lr=lr, warmup_steps=0, decay_steps=steps, weight_decay=0.0))


def hand_logits(fam: AdaptiveLatentCoT, inputs: torch.Tensor) -> torch.Tensor:
    """Reference without caches: level k recomputes every level <= k in one square-masked call."""
    dec, (B, T) = fam.decoder, inputs.shape
    pos = torch.arange(T)
    level_inputs, states = [dec.embed(inputs)], []  # (B, T, D) each
    for k in range(fam.max_steps + 1):
        slots_pos = pos.repeat(k + 1)  # ((k+1) T,)
        slots_level = torch.arange(k + 1).repeat_interleave(T)  # ((k+1) T,)
        mask = (slots_pos[None, :] <= slots_pos[:, None]) & (slots_level[None, :] <= slots_level[:, None])
        h = dec.hidden_states(embeds=torch.cat(level_inputs, 1), positions=slots_pos,
                              attn_mask=mask)[:, -T:]  # (B, T, D): level k
        states.append(h)
        level_inputs.append(h)
    cont = [torch.sigmoid(fam.router(h)) for h in states[:-1]]  # (B, T) each
    reach, mixed = torch.ones(B, T), torch.zeros_like(states[0])
    for k, h in enumerate(states):
        stop = 1 - cont[k] if k < fam.max_steps else torch.ones(B, T)
        mixed = mixed + (reach * stop)[..., None] * h  # (B, T, D)
        if k < fam.max_steps:
            reach = reach * cont[k]
    return dec.logits(mixed)  # (B, T, V)


def hand_ce(fam, tokens):
    logits = hand_logits(fam, tokens[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1), reduction="sum")


def level_major_mask(n_tokens: int, level: int) -> torch.Tensor:
    """Mask (T, (k+1) T) of level k's queries over levels 0..k stored level-major (no pruning)."""
    t = torch.arange(n_tokens)
    k_pos = t.repeat(level + 1)  # ((k+1) T,)
    k_level = torch.arange(level + 1).repeat_interleave(n_tokens)  # ((k+1) T,)
    return grid_mask(t, level, k_pos, k_level)


def test_grid_mask_is_token_and_level_causal():
    T, L = 5, 3
    for k in range(L + 1):
        mask = level_major_mask(T, k)  # (T, (k+1) T)
        assert mask.shape == (T, (k + 1) * T)
        for t in range(T):
            for j in range((k + 1) * T):
                t2, k2 = j % T, j // T
                assert bool(mask[t, j]) == (t2 <= t and k2 <= k)
    # pruned slots are masked out for every query; levels above the query's never visible
    cache = GridCache(None, batch_size=1)
    pos = torch.arange(3)
    cache.extend(pos, 0, torch.ones(1, 3, dtype=torch.bool))
    m1 = cache.extend(pos, 1, torch.tensor([[True, False, True]]))  # (1, 1, 3, 6)
    assert m1[0, 0].tolist() == [[True, False, False, True, False, False],
                                 [True, True, False, True, False, False],
                                 [True, True, True, True, False, True]]
    m0 = grid_mask(torch.tensor([2]), 0, cache.pos, cache.level, cache.valid)  # (1, 1, 1, 6)
    assert m0[0, 0, 0].tolist() == [True, True, True, False, False, False]


def test_levels_match_a_cache_free_reference_and_level_zero_is_vanilla():
    fam = eager_router(tiny(max_steps=3))
    inputs = torch.randint(0, VOCAB, (2, 12))  # (B, T)
    assert torch.allclose(fam.full_logits(inputs), hand_logits(fam, inputs), atol=1e-5)
    out = fam.run(inputs)
    assert torch.allclose(out.states[0], fam.decoder.hidden_states(inputs), atol=1e-6)
    assert torch.allclose(out.weights.sum(-1), torch.ones(2, 12), atol=1e-6)
    later = inputs.clone()
    later[:, 7:] = (later[:, 7:] + 1) % VOCAB  # change the future: the past must not move
    assert torch.allclose(fam.full_logits(later)[:, :7], fam.full_logits(inputs)[:, :7], atol=1e-6)


@pytest.mark.parametrize("router_loss", [False, True])
def test_elbo_equals_summed_cross_entropy(router_loss):
    fam = eager_router(tiny(max_steps=2, halt_lambda=0.1, router_loss=router_loss))
    tokens = torch.randint(0, VOCAB, (3, 13))  # (B, T+1)
    expected = hand_ce(fam, tokens)
    loss = LatentELBO().differentiable_loss(fam.model, EmptyGuide(), tokens)
    router = fam.last_router_loss.sum() if router_loss else 0.0
    assert torch.allclose(loss - router, expected, atol=1e-5, rtol=1e-6)
    assert torch.allclose(fam.last_cross_entropy.sum(), expected, atol=1e-5, rtol=1e-6)
    assert torch.allclose(fam.cross_entropy(tokens).sum(), expected, atol=1e-5, rtol=1e-6)
    pyro_loss = TraceMeanField_ELBO().differentiable_loss(fam.model, EmptyGuide(), tokens)
    assert torch.allclose(pyro_loss - router, expected, atol=1e-5, rtol=1e-6)
    if router_loss:
        assert fam.last_router_loss.min() > 0
        fam.eval()  # evaluation leaves the router factor out: the ELBO is the pure cross-entropy
        loss = LatentELBO().differentiable_loss(fam.model, EmptyGuide(), tokens)
        assert torch.allclose(loss, expected, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_kv_cache_decode_equals_recomputation(threshold):
    fam = eager_router(tiny(max_steps=3, prune_threshold=threshold)).eval()
    tokens = torch.randint(0, VOCAB, (2, 12))  # (B, T)
    full = fam.full_logits(tokens)  # (B, T, V)
    computed = fam.computed_steps
    if threshold:
        assert 0 < computed < 3  # some steps pruned, some kept
    logits, state = fam.prefill(tokens[:, :5], max_len=12)
    steps = [logits]
    for t in range(5, 12):
        logits, state = fam.decode_step(tokens[:, t], state)
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), full[:, 4:], atol=1e-5)


def test_pruning_skips_low_reach_steps():
    fam = eager_router(tiny(max_steps=3, prune_threshold=0.99), bias=-3.0)
    inputs = torch.randint(0, VOCAB, (2, 12))  # (B, T)
    out = fam.run(inputs)
    assert fam.computed_steps == 0 and len(out.states) == 1
    assert torch.allclose(out.logits, fam.decoder(inputs), atol=1e-6)


def test_trains_on_a_repeated_batch():
    fam = tiny(max_steps=2, halt_lambda=0.01)
    tokens = torch.randint(0, VOCAB, (4, 13))  # (B, T+1)
    opt = optimizer(fam, 30)
    losses = [opt.step(tokens).loss for _ in range(30)]
    assert losses[-1] < losses[0] - 0.5


def test_large_lambda_halts_everything_and_becomes_vanilla():
    fam = tiny(max_steps=3, halt_lambda=200.0)
    tokens = torch.randint(0, VOCAB, (8, 13))  # (B, T+1)
    inputs = tokens[:, :-1]  # (B, T)
    fam.run(inputs)
    start = fam.mean_steps
    opt = optimizer(fam, 40, lr=5e-2)
    for _ in range(40):
        opt.step(tokens)
    with torch.no_grad():
        soft = fam.run(inputs)
        vanilla = fam.decoder(inputs)  # (B, T, V): level 0 alone
        assert start > 0.8 and fam.mean_steps < 0.05 and soft.steps.max() < 0.1
        assert soft.weights[..., 0].min() > 0.9
        fam.prune_threshold = 0.1  # every latent step now falls below the threshold
        pruned = fam.full_logits(inputs)
    assert fam.computed_steps == 0.0
    assert torch.allclose(pruned, vanilla, atol=1e-6)


def triples(batch: int, n: int = 4, m: int = 5, generator=None) -> torch.Tensor:
    """Blocks of triples [d, d, s]: after the first d its copy (easy), after the copy the running
    sum s = d_1 + ... + d_i mod m (hard: a computation over the prefix), then a fresh random digit."""
    d = torch.randint(0, m, (batch, n), generator=generator)  # (B, n)
    s = d.cumsum(1) % m + 20  # (B, n)
    return torch.stack([d + 1, d + 1, s], -1).reshape(batch, 3 * n)  # (B, 3n)


def test_hard_positions_get_more_steps():
    torch.manual_seed(0)
    fam = tiny(max_steps=3, halt_lambda=0.05, halt_beta=1.0)
    opt = optimizer(fam, 120)
    for _ in range(120):
        opt.step(triples(64))
    tokens = triples(256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        steps = fam.run(tokens[:, :-1]).steps  # (B, T)
    phase = torch.arange(steps.shape[1]) % 3
    easy, hard = steps[:, phase == 0].mean(), steps[:, phase == 1].mean()
    assert hard > easy + 0.5, (float(easy), float(hard))


def test_builder_and_sampler():
    options = dict(max_steps=2, halt_lambda=0.5, halt_beta=2.0, prune_threshold=0.3)
    cfg = TrainConfig.from_dict({"model": "adaptive_cot", "d_model": 32, "n_layer": 2, "n_head": 2,
                                 "block_size": 32, "adaptive_cot": options})
    fam = eager_router(build_model(cfg, VOCAB))
    assert (fam.max_steps, fam.halt_lambda, fam.halt_beta, fam.prune_threshold) == (2, 0.5, 2.0, 0.3)
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    cached = decode(fam, prompts, SamplingConfig(max_new_tokens=6, seed=3))
    fresh = decode(fam, prompts, SamplingConfig(max_new_tokens=6, seed=3, use_cache=False))
    assert cached == fresh and all(len(row) == 6 for row in cached)
    # the stated cost is 1 + the steps actually computed: all l_max when the router always goes on,
    # none when its first continue probability already falls below the pruning threshold
    for bias, cost in ((30.0, 3.0), (-30.0, 1.0)):
        with torch.no_grad():
            fam.router.proj.weight.zero_()
            fam.router.proj.bias.fill_(bias)
        decode(fam, prompts, SamplingConfig(max_new_tokens=3, seed=3))
        assert fam.cost_per_token == cost
        assert fam.metrics() == {"mean_latent_steps": pytest.approx(cost - 1.0, abs=1e-6)}
