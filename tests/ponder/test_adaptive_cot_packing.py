"""Adaptive latent CoT skips for real: a partly active level runs its active slots only (packed),
and gives the same logits, losses and gradients as running it in full with the skipped slots masked."""

from __future__ import annotations

import pytest
import torch

from ltm.inference import EmptyGuide, LatentELBO
from ltm.models import Decoder, DecoderConfig
from ltm.ponder.adaptive_cot import AdaptiveLatentCoT

VOCAB = 40


def family(threshold: float = 0.3, window: int | None = None) -> AdaptiveLatentCoT:
    """A tiny family whose router gives varied continue probabilities (partly active levels)."""
    cfg = DecoderConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, d_model=32, window=window)
    fam = AdaptiveLatentCoT(Decoder(cfg), max_steps=3, halt_lambda=0.1, prune_threshold=threshold)
    with torch.no_grad():
        fam.router.proj.weight.normal_(0.0, 0.5)
        fam.router.proj.bias.fill_(1.0)
    return fam


def mlp_rows(fam: AdaptiveLatentCoT, fn) -> tuple[object, int]:
    """Run `fn()`, counting the token rows the first layer's MLP saw (the token-wise work done)."""
    seen = []
    hook = fam.decoder.blocks[0].mlp.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].shape[:-1].numel()))
    try:
        return fn(), sum(seen)
    finally:
        hook.remove()


def loss_and_grads(fam: AdaptiveLatentCoT, tokens: torch.Tensor, gather: bool):
    """ELBO loss (router factor included), logits, gradients and MLP rows of one training step."""
    fam.gather = gather
    fam.zero_grad(set_to_none=True)
    loss, rows = mlp_rows(fam, lambda: LatentELBO().differentiable_loss(fam.model, EmptyGuide(), tokens))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in fam.named_parameters() if p.grad is not None}
    with torch.no_grad():
        logits = fam.run(tokens[:, :-1]).logits  # (B, T, V)
    return loss.detach(), logits, grads, rows


def test_the_fixture_has_partly_active_unbalanced_levels():
    out = family().run(torch.randint(0, VOCAB, (4, 16)))
    per_row = out.active[..., 1:].sum(1)  # (B, K-1): active tokens per row and latent level
    partly = (per_row > 0) & (per_row < 16)
    assert bool(partly.any()) and bool((per_row.max(0).values > per_row.min(0).values).any())


@pytest.mark.parametrize("window", [None, 5])
def test_training_step_equals_the_masked_reference(window):
    fam = family(window=window).train()
    tokens = torch.randint(0, VOCAB, (4, 17))  # (B, T+1)
    loss, logits, grads, rows = loss_and_grads(fam, tokens, gather=True)
    computed = fam.computed_steps
    ref_loss, ref_logits, ref_grads, ref_rows = loss_and_grads(fam, tokens, gather=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and "router.proj.weight" in grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-5, msg=name)
    # the packed path did the token-wise work of the computed slots only: (1 + steps) per token
    assert rows == round(tokens[:, :-1].numel() * (1 + computed)) < ref_rows


def test_eval_cross_entropy_equals_the_masked_reference():
    fam = family().eval()
    tokens = torch.randint(0, VOCAB, (3, 17))  # (B, T+1)
    with torch.no_grad():
        packed = fam.cross_entropy(tokens)  # (B,)
        fam.gather = False
        masked = fam.cross_entropy(tokens)  # (B,)
    torch.testing.assert_close(packed, masked, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_cached_decode_skips_and_equals_the_masked_reference(batch):
    fam = family().eval()
    tokens = torch.randint(0, VOCAB, (batch, 14))  # (B, T)
    runs = {}
    for gather in (True, False):
        fam.gather = gather

        def decode(fam=fam):
            logits, state = fam.prefill(tokens[:, :4], max_len=14)
            steps = [logits]  # (B, V) each
            for t in range(4, 14):
                logits, state = fam.decode_step(tokens[:, t], state)
                steps.append(logits)
            return torch.stack(steps, 1), state  # (B, T-3, V)

        (logits, state), rows = mlp_rows(fam, decode)
        runs[gather] = logits, state, rows
    (packed, state, rows), (masked, ref_state, ref_rows) = runs[True], runs[False]
    torch.testing.assert_close(packed, masked, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed, fam.full_logits(tokens)[:, 3:], rtol=0, atol=1e-5)
    assert state.mean_steps == ref_state.mean_steps < 3
    assert rows == round(state.tokens * (1 + state.mean_steps)) < ref_rows
    assert state.cache.kv.length < ref_state.cache.kv.length  # fewer slots written to the KV cache
