"""Vanilla, pause tokens and the looped decoder: ELBO = cross-entropy, exact cached decode, training."""

from __future__ import annotations

import pytest
import torch

from ltm.ponder.looped import LoopedDecoder
from ltm.ponder.pause import PauseTokens
from ltm.ponder.vanilla import VanillaDecoder
from tests.ponder.helpers import (
    assert_cache_matches_recompute,
    assert_elbo_is_cross_entropy,
    batch,
    tiny_decoder,
    train_losses,
)

FAMILIES = {
    "vanilla": lambda **kw: VanillaDecoder(tiny_decoder(**kw)),
    "pause": lambda **kw: PauseTokens(tiny_decoder(**kw), pauses=2),
    "looped": lambda **kw: LoopedDecoder(tiny_decoder(**kw), loops=2),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_elbo_equals_summed_cross_entropy(name):
    assert_elbo_is_cross_entropy(FAMILIES[name](), batch())


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("name", FAMILIES)
def test_kv_cache_decode_equals_recomputation(name, window):
    assert_cache_matches_recompute(FAMILIES[name](window=window), batch()[:, :-1], prompt=3)


@pytest.mark.parametrize("name", FAMILIES)
def test_trains(name):
    losses = train_losses(FAMILIES[name]())
    assert losses[-1] < losses[0] - 0.3, losses


def test_zero_budget_is_the_vanilla_decoder():
    vanilla = VanillaDecoder(tiny_decoder())
    tokens = batch()[:, :-1]
    expected = vanilla.full_logits(tokens)
    for family in (PauseTokens(vanilla.decoder, pauses=0), LoopedDecoder(vanilla.decoder, loops=1)):
        torch.testing.assert_close(family.full_logits(tokens), expected)


def test_looped_decoder_differs_from_one_loop():
    looped = LoopedDecoder(tiny_decoder(), loops=3)
    tokens = batch()[:, :-1]
    assert not torch.allclose(looped.full_logits(tokens), looped.decoder(tokens))
