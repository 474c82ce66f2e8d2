"""A pretrained Llama or Qwen2 checkpoint loaded into ltm computes what `transformers` computes."""

from __future__ import annotations

import pytest
import torch

from ltm.models import LatentThoughtModel, LTMOptions, from_hf
from ltm.ponder.vanilla import VanillaDecoder
from ltm.sampling import SamplingConfig, generate
from tests.pretrained.conftest import KINDS, ROWS, reference


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_transformers(hf_checkpoints, kind):
    """GQA with a tied head, an untied head with Llama 3 RoPE scaling (positions past the scaled
    band), and Qwen2's biases: every logit within 1e-4 in fp32."""
    folder = hf_checkpoints[kind]
    model, tokenizer = from_hf(folder, VanillaDecoder, block_size=200)
    tokens = torch.randint(0, ROWS, (2, 150))
    with torch.no_grad():
        expected = reference(folder)(tokens).logits  # (B, T, V)
        got = model.full_logits(tokens)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4
    assert expected.std() > 0.5  # the weights are far from their init: a wrong map would show


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_equals_transformers(hf_checkpoints, kind):
    """20 greedy tokens through ltm's sampler (its KV cache) equal `generate`'s."""
    folder = hf_checkpoints[kind]
    model, _ = from_hf(folder, VanillaDecoder, block_size=64)
    prompt = torch.randint(0, ROWS, (1, 6))
    ref = reference(folder)
    ref.generation_config.eos_token_id = None  # 20 tokens whatever they are, as ltm's sampler here
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=20, do_sample=False)[0, 6:].tolist()
    assert len(expected) == 20
    got = generate(model, [prompt[0].tolist()], sampling=SamplingConfig(max_new_tokens=20, temperature=0))
    assert got == [expected]


@pytest.mark.parametrize("kind", KINDS)
def test_ltm_at_step_zero_is_the_pretrained_model(hf_checkpoints, kind):
    """The cross-attention enters through a zero projection: the pretrained logits for any z."""
    folder = hf_checkpoints[kind]
    plain, _ = from_hf(folder, VanillaDecoder, block_size=64)
    ltm, _ = from_hf(folder, LatentThoughtModel, LTMOptions(n_latent=2, d_latent=8), block_size=64)
    tokens = torch.randint(0, ROWS, (3, 40))
    with torch.no_grad():
        expected = plain.full_logits(tokens)
        for scale in (1.0, 30.0):
            z = scale * torch.randn(3, 2, 8)
            assert (ltm.full_logits(tokens, latents=z) - expected).abs().max() <= 1e-5
    crossed = [p for name, p in ltm.named_parameters() if ".cross." in name]
    assert crossed and any(p.abs().sum() > 0 for p in crossed)  # only its output starts at zero
