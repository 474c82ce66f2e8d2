"""The family-agnostic decode loop: seeded, batch-independent, cache == no cache."""

from __future__ import annotations

import pytest

from ltm.ponder.baselines import LoopedDecoder, PauseTokens
from ltm.ponder.decode import decode, is_token_level
from ltm.ponder.ponderlm2 import PonderLM2
from ltm.ponder.vanilla import VanillaDecoder
from ltm.sampling import SamplingConfig
from tests.ponder.helpers import tiny_decoder

FAMILIES = {
    "vanilla": lambda: VanillaDecoder(tiny_decoder()),
    "ponderlm2": lambda: PonderLM2(tiny_decoder(), thoughts=2),
    "pause": lambda: PauseTokens(tiny_decoder(), pauses=1),
    "looped": lambda: LoopedDecoder(tiny_decoder(), loops=2),
}
PROMPTS = [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11], [12]]


@pytest.mark.parametrize("name", FAMILIES)
def test_seeded_batch_independent_and_cache_free_equal(name):
    family = FAMILIES[name]()
    assert is_token_level(family)
    cfg = SamplingConfig(max_new_tokens=6, temperature=1.5, top_k=20, top_p=0.95, seed=7)
    rows = decode(family, PROMPTS, cfg)
    assert [len(r) for r in rows] == [6] * len(PROMPTS)
    assert decode(family, PROMPTS, cfg) == rows  # reproducible with a seed
    assert decode(family, PROMPTS, SamplingConfig(**{**vars(cfg), "use_cache": False})) == rows
    for i, p in enumerate(PROMPTS):  # row i of the batch == a one-row call with first_row=i
        assert decode(family, [p], cfg, first_row=i) == [rows[i]]
    other = decode(family, PROMPTS, SamplingConfig(**{**vars(cfg), "seed": 8}))
    assert other != rows


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_cache_equals_recompute_and_eos_stops(name):
    family = FAMILIES[name]()
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    rows = decode(family, PROMPTS[:2], greedy)
    assert decode(family, PROMPTS[:2], SamplingConfig(max_new_tokens=8, temperature=0.0,
                                                      use_cache=False)) == rows
    eos = rows[0][2]
    cut = decode(family, PROMPTS[:1], SamplingConfig(max_new_tokens=8, temperature=0.0, eos_id=eos))
    assert cut == [rows[0][:rows[0].index(eos) + 1]]
