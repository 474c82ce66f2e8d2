"""The VampPrior: a mixture of the amortised posterior at its learned pseudo-inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ltm.core.errors import ConfigError
from ltm.inference import build_guide
from ltm.priors import build_prior

N, D = 4, 8
CONTEXT = {"vocab_size": 37, "num_latents": N, "latent_dim": D}


def test_log_prob_is_the_mixture_of_the_encoder_at_the_pseudo_inputs():
    prior = build_prior("vamp", N, D, num_pseudo=3, pseudo_len=5, pseudo_dim=16)
    guide = build_guide("amortized", CONTEXT, encoder_dim=16)
    with torch.no_grad():
        for p in guide.encoder.out.parameters():
            p.normal_(std=0.3)  # components apart from each other
    prior.bind_guide(guide)
    z = prior().sample((6,))  # (6, N, D)
    loc, log_scale = guide.encoder.encode_embeddings(prior.pseudo_inputs)  # (3, N, D) each
    per_component = torch.distributions.Normal(loc, log_scale.exp()).log_prob(z[:, None])  # (6, 3, N, D)
    by_hand = per_component.sum((-1, -2)).logsumexp(-1) - math.log(3)  # (6,)
    torch.testing.assert_close(prior().log_prob(z), by_hand, rtol=1e-4, atol=1e-4)


def test_vamp_needs_an_amortised_guide_of_its_width():
    prior = build_prior("vamp", N, D)
    with pytest.raises(RuntimeError, match="the vamp prior has no encoder yet: call prior.bind_guide"):
        prior()
    with pytest.raises(ConfigError, match="needs guide 'amortized' or 'semi_amortized', not "
                                          "LocalGaussianGuide"):
        prior.bind_guide(build_guide("gaussian"))
    with pytest.raises(ConfigError, match="pseudo-inputs have width 64 but the guide's encoder has "
                                          "width 16; set the prior's pseudo_dim"):
        prior.bind_guide(build_guide("amortized", CONTEXT, encoder_dim=16))
    with pytest.raises(ValueError, match="num_pseudo, pseudo_len and pseudo_dim must be >= 1"):
        build_prior("vamp", N, D, num_pseudo=0)


def test_the_encoder_is_saved_with_the_guide_only():
    prior = build_prior("vamp", N, D)
    prior.bind_guide(build_guide("semi_amortized", CONTEXT))
    assert list(prior.state_dict()) == ["pseudo_inputs"]
