"""Shared fixtures: tiny models and the synthetic topic corpus."""

from __future__ import annotations

import os

import pyro
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ltm import DecoderConfig, LatentThoughtModel  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_clear():
    torch.manual_seed(0)
    pyro.clear_param_store()
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
