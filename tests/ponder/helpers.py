"""Tiny token-level families and the checks every family must pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO

from ltm.inference import DualRateOptimizer, EmptyGuide, InnerLoopConfig, LatentELBO, SlowConfig
from ltm.models.config import DecoderConfig
from ltm.models.decoder import Decoder

VOCAB, T = 40, 12


def tiny_decoder(**overrides) -> Decoder:
    """d=32, 2 layers, vocab 40, no cross-attention."""
    base = dict(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, d_model=32)
    return Decoder(DecoderConfig(**{**base, **overrides}))


def batch(b: int = 3, t: int = T, seed: int = 0) -> torch.Tensor:
    """Token blocks (b, t+1)."""
    return torch.randint(0, VOCAB, (b, t + 1), generator=torch.Generator().manual_seed(seed))


def hand_cross_entropy(family, tokens: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of the family's training-path logits."""
    logits = family.train_logits(tokens[:, :-1])[0]  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1), reduction="sum")


def assert_elbo_is_cross_entropy(family, tokens: torch.Tensor) -> None:
    """With the empty guide, Pyro's loss equals the summed cross-entropy (KL exactly zero)."""
    family.eval()
    expected = hand_cross_entropy(family, tokens)
    for elbo in (LatentELBO(), TraceMeanField_ELBO()):
        loss = elbo.differentiable_loss(family.model, EmptyGuide(), tokens)
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    terms = LatentELBO().terms(family.model, EmptyGuide(), tokens)
    assert float(terms.kl.abs().sum()) == 0.0


def train_losses(family, steps: int = 12, lr: float = 1e-2) -> list[float]:
    """Dual-rate steps (empty inner loop) on one repeated batch; the per-token losses."""
    opt = DualRateOptimizer(family, EmptyGuide(), InnerLoopConfig(steps=0),
                            SlowConfig(lr=lr, warmup_steps=0, decay_steps=steps, weight_decay=0.0))
    tokens = batch(4)
    return [opt.step(tokens).loss for _ in range(steps)]


def assert_cache_matches_recompute(family, tokens: torch.Tensor, prompt: int = 3) -> None:
    """decode_step logits equal full_logits at every position after a prefill of `prompt` tokens."""
    family.eval()
    full = family.full_logits(tokens)  # (B, T, V)
    logits, state = family.prefill(tokens[:, :prompt], max_len=tokens.shape[1])
    torch.testing.assert_close(logits, full[:, prompt - 1], rtol=1e-4, atol=1e-5)
    for t in range(prompt, tokens.shape[1]):
        logits, state = family.decode_step(tokens[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-5)
