"""Active units and mutual information where the answer is known: the synthetic topic corpus."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.distributions import Normal

from ltm.inference import InnerLoopConfig
from ltm.inference.diagnostics import active_units, mutual_information, posterior_diagnostics


def test_a_model_that_recovers_the_topic_uses_its_latent(topic_ltm, topic_corpus):
    _, test, _ = topic_corpus
    found = posterior_diagnostics(topic_ltm.family, topic_ltm.guide, list(test[:128].split(32)),
                                  InnerLoopConfig(steps=6, lr=0.3))
    assert found.sequences == 128 and found.units == 2 * 16
    assert found.active_units >= 1
    assert found.mutual_info > 0.5  # nats; 4 equally likely topics carry log 4 = 1.39
    assert found.mutual_info <= math.log(128) + 1e-6  # the estimator's ceiling
    assert len(found.kl_per_latent) == 2 and sum(found.kl_per_latent) > 0.5


def test_q_at_the_prior_carries_nothing(topic_ltm, topic_corpus):
    _, test, _ = topic_corpus
    found = posterior_diagnostics(topic_ltm.family, topic_ltm.guide, list(test[:128].split(32)),
                                  InnerLoopConfig(steps=0))  # q = its start N(0, I) = the prior
    assert found.active_units == 0
    assert found.mutual_info == pytest.approx(0.0, abs=1e-6)
    assert found.kl_per_latent == pytest.approx([0.0, 0.0], abs=1e-6)


def test_estimators_on_posteriors_written_by_hand():
    torch.manual_seed(0)
    topics = torch.arange(400) % 4  # (M,)
    centres = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, -6.0], [0.0, 6.0]])  # well separated
    loc = centres[topics][:, None, :]  # (M, 1, 2): one latent vector of width 2
    sharp = Normal(loc, 0.1).to_event(2)
    z = sharp.sample()  # (M, 1, 2)
    # q knows the topic exactly: I(x; z) = H(topic) = log 4 (the MC estimate is close)
    assert mutual_information([sharp], z) == pytest.approx(math.log(4), abs=0.02)
    assert active_units(loc) == 2  # both coordinates move with the topic
    flat = Normal(torch.zeros_like(loc), 1.0).to_event(2)  # every q the same: no information
    assert mutual_information([flat], flat.sample()) == pytest.approx(0.0, abs=1e-6)
    assert active_units(torch.zeros_like(loc) + 0.05 * torch.randn_like(loc)) == 0  # var 0.0025
    # split into batches, the estimate is the same
    halves = [Normal(loc[:200], 0.1).to_event(2), Normal(loc[200:], 0.1).to_event(2)]
    assert mutual_information(halves, z) == pytest.approx(mutual_information([sharp], z), abs=1e-5)


def test_a_deterministic_family_has_no_diagnostics():
    from ltm.inference import EmptyGuide
    from ltm.models import DecoderConfig
    from ltm.ponder.vanilla import VanillaDecoder

    cfg = DecoderConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, d_model=8)
    family = VanillaDecoder.from_config(cfg)
    assert posterior_diagnostics(family, EmptyGuide(), [torch.randint(0, 16, (2, 9))],
                                 InnerLoopConfig(steps=2)) is None
