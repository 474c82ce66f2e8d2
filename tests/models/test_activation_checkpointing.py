"""Activation checkpointing (`Decoder.checkpoint_blocks`) recomputes each block in the backward
pass and leaves the gradients as they are, for every registered family."""

from __future__ import annotations

from unittest import mock

import pyro
import pytest
import torch

from ltm.families import FAMILIES
from ltm.inference import (
    DualRateOptimizer,
    InnerLoopConfig,
    LatentELBO,
    LocalGaussianGuide,
    SlowConfig,
    build_guide,
    fit_local,
)
from ltm.inference.guides.base import pyro_guide
from ltm.models import DecoderConfig, LatentThoughtModel
from ltm.models.decoder import Block

CFG = DecoderConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=32)


def _grads(name: str, recompute: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of the negative ELBO (one noise draw, the same for both settings) of every
    parameter of the family and of the guide's local posteriors; and how often blocks ran."""
    torch.manual_seed(0)
    family = FAMILIES[name].from_config(CFG)
    guide = build_guide(family.default_guide)
    tokens = torch.randint(0, 40, (2, CFG.block_size + 1))  # (B, T+1)
    fit_local(family, guide, tokens, InnerLoopConfig(steps=1, lr=0.01))
    family.decoder.checkpoint_blocks = recompute
    calls, forward = [], Block.forward

    def counted(self, *args, **kwargs):  # module hooks do not fire in a recomputation
        calls.append(1)
        return forward(self, *args, **kwargs)

    pyro.set_rng_seed(1)
    with mock.patch.object(Block, "forward", counted):
        terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
        (-terms.elbo.sum()).backward()
    params = [*family.named_parameters(), *(("guide." + n, p) for n, p in guide.named_parameters())]
    return {n: p.grad.clone() for n, p in params if p.grad is not None}, len(calls)


@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if f.recomputes_blocks))
def test_gradients_are_unchanged_by_recomputation(name):
    (plain, runs), (recomputed, reruns) = _grads(name, False), _grads(name, True)
    assert reruns == 2 * runs > 0  # every block ran again in the backward pass
    assert plain.keys() == recomputed.keys() and plain
    for key in plain:
        torch.testing.assert_close(recomputed[key], plain[key], rtol=0, atol=1e-6, msg=key)


def test_an_ltm_outer_step_with_its_inner_loop_is_unchanged():
    """The inner loop's backward passes (gradients for the local posteriors) go through the
    recomputed blocks too: a few outer steps give the same weights."""
    cfg = DecoderConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=32, n_latent=4,
                        d_latent=16)
    weights = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = LatentThoughtModel.build(cfg)
        model.decoder.checkpoint_blocks = recompute
        opt = DualRateOptimizer(model, LocalGaussianGuide(), InnerLoopConfig(steps=3, lr=0.1),
                                SlowConfig(lr=1e-2, warmup_steps=0, decay_steps=10))
        tokens = torch.randint(0, 40, (3, cfg.block_size + 1))  # (B, T+1)
        for _ in range(3):
            opt.step(tokens)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, rtol=0, atol=1e-6, msg=name)


def test_no_recomputation_without_gradients_or_with_a_cache():
    """Decoding (a KV cache, no gradients) runs the blocks directly: the cache is written once."""
    torch.manual_seed(0)
    family = FAMILIES["vanilla"].from_config(CFG).eval()
    tokens = torch.randint(0, 40, (1, 8))  # (B, T)
    expected = family.full_logits(tokens)[:, -1]  # (B, V)
    family.decoder.checkpoint_blocks = True
    first, state = family.prefill(tokens[:, :7], 8)
    nxt, _ = family.decode_step(tokens[:, 7], state)
    torch.testing.assert_close(nxt, expected, rtol=1e-4, atol=1e-5)


def test_a_family_that_cannot_recompute_is_refused_in_one_sentence():
    from ltm.core.errors import ConfigError
    from ltm.training.config import TrainConfig

    with pytest.raises(ConfigError, match="does not apply to the adaptive_cot family"):
        TrainConfig(model="adaptive_cot", activation_checkpointing=True)
