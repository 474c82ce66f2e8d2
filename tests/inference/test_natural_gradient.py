"""The "natgrad" fast optimiser: SGD along the inverse-Fisher-preconditioned gradient of q."""

from __future__ import annotations

import torch

from ltm import DecoderConfig, LatentThoughtModel
from ltm.inference import DeltaGuide, InnerLoopConfig, LocalGaussianGuide, fit_local

CFG = DecoderConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, d_model=16, n_latent=2, d_latent=4)


def _one_step(optimizer, guide, noise):
    torch.manual_seed(0)
    family = LatentThoughtModel.build(CFG)
    tokens = torch.randint(0, 30, (3, 13))  # (B, T+1)
    fit_local(family, guide, tokens, InnerLoopConfig(steps=1, lr=0.1, optimizer=optimizer,
                                                     schedule="constant", reuse_noise=True), noise=noise)
    return {k: v.detach() for k, v in guide.locals.items()}


def test_natgrad_is_sgd_scaled_by_the_inverse_fisher():
    noise = torch.randn(3, 2, 4)  # (B, N, D): the same draw for both
    sgd = _one_step("sgd", LocalGaussianGuide(init_scale=0.5, init_loc=0.3), noise)
    nat = _one_step("natgrad", LocalGaussianGuide(init_scale=0.5, init_loc=0.3), noise)
    start_log_scale = torch.full((3, 2, 4), 0.5).log()
    # loc moves by scale^2 = 0.25 times the SGD step; log scale by half of it
    assert torch.allclose(nat["loc"] - 0.3, 0.25 * (sgd["loc"] - 0.3), atol=1e-6)
    assert torch.allclose(nat["log_scale"] - start_log_scale, 0.5 * (sgd["log_scale"] - start_log_scale),
                          atol=1e-6)
    assert not torch.allclose(sgd["loc"], torch.full_like(sgd["loc"], 0.3))  # the step did move


def test_a_guide_without_a_fisher_takes_plain_sgd_steps():
    noise = torch.randn(3, 2, 4)
    sgd = _one_step("sgd", DeltaGuide(init_loc=0.1), noise)
    nat = _one_step("natgrad", DeltaGuide(init_loc=0.1), noise)
    assert torch.allclose(sgd["loc"], nat["loc"])
