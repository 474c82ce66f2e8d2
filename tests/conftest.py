"""Shared fixtures: tiny models and the synthetic topic corpus."""

from __future__ import annotations

import os

import pyro
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ltm import DecoderConfig, LatentThoughtModel  # noqa: E402

# Tests that drive the command-line tools, other processes or notebooks end to end (`integration`).
INTEGRATION = ("cli/", "reliability/", "test_notebooks.py", "test_bench.py", "training/test_distributed.py",
               "eval/test_compare.py", "eval/test_lm_eval_adapter.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.path.as_posix()
        if any(f"/tests/{part}" in path for part in INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _seed_clear_and_validate():
    """Every test starts seeded, with an empty param store and Pyro's shape and support checks on
    (the library follows Pyro's global switch, so they reach the inner loop too)."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield


def tiny_config(**overrides) -> DecoderConfig:
    """A decoder small enough for a unit test: d=32, 2 layers, 4 latent vectors of width 8."""
    base = dict(vocab_size=37, block_size=48, n_layer=2, n_head=2, d_model=32, n_latent=4, d_latent=8)
    return DecoderConfig(**{**base, **overrides})


@pytest.fixture
def tiny_ltm() -> LatentThoughtModel:
    return LatentThoughtModel.build(tiny_config(), "learned_normal")


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 37, (3, 17))  # (B, T+1)


@pytest.fixture(scope="session")
def topic_corpus():
    """4 hidden Markov chains over 32 tokens: (train (3200, 49), held-out tokens and topics (256,))."""
    from ltm.data.synthetic import TopicMarkovChains

    chains = TopicMarkovChains(num_topics=4, vocab_size=32, seed=0)
    train, _ = chains.sample(100 * 32, 49, seed=1)
    test, topics = chains.sample(256, 49, seed=2)
    return train, test, topics


TOPIC_DECODER = dict(vocab_size=32, block_size=48, n_layer=2, n_head=2, d_model=64, window=3)
TOPIC_STEPS, TOPIC_BATCH, TOPIC_LR = 100, 32, 1e-2


def train_on_topics(train: torch.Tensor, guide: str = "gaussian", inner_steps: int = 6, **guide_kwargs):
    """A tiny LTM (2 latent vectors of width 16) trained briefly on the topic corpus with `guide`."""
    from ltm.inference import DualRateOptimizer, InnerLoopConfig, SlowConfig, build_guide

    torch.manual_seed(0)
    ltm = LatentThoughtModel.build(DecoderConfig(**TOPIC_DECODER, n_latent=2, d_latent=16))
    context = {"vocab_size": TOPIC_DECODER["vocab_size"], "num_latents": 2, "latent_dim": 16}
    opt = DualRateOptimizer(ltm, build_guide(guide, context, **guide_kwargs),
                            InnerLoopConfig(steps=inner_steps, lr=0.3),
                            SlowConfig(lr=TOPIC_LR, warmup_steps=20, decay_steps=TOPIC_STEPS,
                                       weight_decay=0.0))
    for batch in train.split(TOPIC_BATCH):
        opt.step(batch)
    return opt


@pytest.fixture(scope="session")
def topic_ltm(topic_corpus):
    """A tiny LTM with the local Gaussian guide (K=6) trained briefly on the topic corpus."""
    return train_on_topics(topic_corpus[0])
