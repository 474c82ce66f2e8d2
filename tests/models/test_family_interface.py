"""Every registered family keeps the `Family` contract the trainer, the sampler and the evaluator use."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltm.families import FAMILIES, resolve_family
from ltm.inference import InnerLoopConfig, LatentELBO, build_guide, check_guide_fits_prior, fit_local
from ltm.inference.guides.base import pyro_guide
from ltm.inference.posterior_fit import draw_latents
from ltm.models import DecoderConfig, Family

CFG = DecoderConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=32)


def build(name: str) -> Family:
    torch.manual_seed(0)
    return FAMILIES[name].from_config(CFG)  # every option at its default


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_registry_key_is_the_name_and_the_options_are_a_dataclass(name):
    family = FAMILIES[name]
    assert issubclass(family, Family) and family.name == name and resolve_family(name) is family
    assert dataclasses.is_dataclass(family.Options)
    family.Options()  # every option has a default


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_default_guide_fits_and_the_elbo_is_finite(name):
    family = build(name)
    guide = build_guide(family.default_guide)
    check_guide_fits_prior(guide, family.prior)
    tokens = torch.randint(0, 40, (2, CFG.block_size + 1))  # (B, T+1)
    fit_local(family, guide, tokens, InnerLoopConfig(steps=1, lr=0.01))
    guide.detach_locals()
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), tokens)
    assert torch.isfinite(terms.elbo).all()
    has_latent = draw_latents(family, guide, tokens) is not None
    assert family.exact_nll == (not has_latent)  # exact exactly when nothing stochastic is inferred
    if family.exact_nll:
        assert float(terms.kl.abs().sum()) == 0.0
    # the sampler draws z per sequence exactly when the guide has a sequence-level (not token-level) z
    assert family.sequence_latent == (has_latent and not family.prior.token_level)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_logits_metrics_and_cost(name):
    family = build(name).eval()
    tokens = torch.randint(0, 40, (2, 6))  # (B, T)
    z = torch.randn(2, *family.prior.event_shape) if family.sequence_latent else None
    logits = family.full_logits(tokens, z)
    assert logits.shape == (2, 6, 40)
    first, state = family.prefill(tokens[:, :3], 6, z)
    torch.testing.assert_close(first, logits[:, 2], rtol=1e-4, atol=1e-5)
    nxt, _ = family.decode_step(tokens[:, 3], state)
    torch.testing.assert_close(nxt, logits[:, 3], rtol=1e-4, atol=1e-5)
    assert all(isinstance(v, float) for v in family.metrics().values())
    assert family.cost_per_token >= 1.0
    if not family.sequence_latent:
        with pytest.raises(ValueError, match=f"model '{name}' has no sequence-level latent"):
            family.full_logits(tokens, torch.zeros(2, 4, 8))
