"""Coconut: a block without thoughts is the vanilla decoder's, thoughts are the previous position's
hidden state (checked against a slow sequential reference), cached decoding equals the full pass,
and the placed tokens are not scored."""

from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn.functional as F

from ltm.core.errors import ConfigError
from ltm.core.sites import TOKEN_SITE
from ltm.models.decoder import Decoder
from ltm.ponder.coconut import Coconut
from ltm.ponder.vanilla import VanillaDecoder
from tests.conftest import tiny_config

THOUGHT, EOT, BOT = 5, 4, 3


def coconut(**overrides) -> Coconut:
    torch.manual_seed(0)
    return Coconut(Decoder(tiny_config(n_latent=0, **overrides)), thought_id=THOUGHT, eot_id=EOT)


def with_thoughts(batch: int = 3, length: int = 20) -> torch.Tensor:
    """Random blocks (B, L) without specials, then <bot>, 1-3 thoughts and <eot> at row-dependent places."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(6, 37, (batch, length), generator=g)  # (B, L)
    for row in range(batch):
        at, n = 3 + 2 * row, 1 + row % 3
        tokens[row, at] = BOT
        tokens[row, at + 1:at + 1 + n] = THOUGHT
        tokens[row, at + 1 + n] = EOT
    return tokens


def reference_logits(family: Coconut, tokens: torch.Tensor) -> torch.Tensor:
    """Position by position: a thought's input is the last hidden state of the prefix before it."""
    logits = []
    for row in tokens:
        embeds = family.decoder.embed(row)  # (L, D)
        for t in range(1, len(row)):
            if row[t] == THOUGHT:
                embeds = embeds.clone()
                embeds[t] = family.decoder.hidden_states(embeds=embeds[None, :t])[0, -1]
        logits.append(family.decoder(embeds=embeds[None])[0])  # (L, V)
    return torch.stack(logits)  # (B, L, V)


def test_without_thoughts_it_is_the_vanilla_decoder():
    family = coconut()
    vanilla = VanillaDecoder(family.decoder)
    tokens = torch.randint(6, 37, (3, 17))  # (B, T+1): no thought, no <eot>
    assert torch.equal(family.exact_logits(tokens), vanilla.exact_logits(tokens))
    traces = [pyro.poutine.trace(m.model).get_trace(tokens) for m in (family, vanilla)]
    assert torch.equal(traces[0].log_prob_sum(), traces[1].log_prob_sum())


def test_thoughts_are_the_previous_hidden_state():
    family = coconut()
    tokens = with_thoughts()
    with torch.no_grad():
        assert torch.allclose(family.exact_logits(tokens), reference_logits(family, tokens), atol=1e-5)
        plain = family.decoder(tokens)  # thought tokens read as tokens: a different computation
    assert not torch.allclose(family.exact_logits(tokens), plain, atol=1e-3)


@pytest.mark.parametrize("prompt_len", [1, 4, 9])
def test_cached_decoding_equals_the_full_pass(prompt_len):
    family = coconut().eval()
    tokens = with_thoughts()
    full = family.exact_logits(tokens)  # (B, L, V)
    logits, state = family.start_decode(tokens[:, :prompt_len])
    steps = [logits]
    for t in range(prompt_len, tokens.shape[1]):
        logits, state = family.decode_step(tokens[:, t], state)
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), full[:, prompt_len - 1:], atol=1e-5)


def test_thought_and_eot_targets_are_not_scored_and_gradients_reach_the_thoughts():
    family = coconut()
    tokens = with_thoughts(length=21)
    trace = pyro.poutine.trace(family.model).get_trace(tokens)
    with torch.no_grad():
        logits = reference_logits(family, tokens[:, :-1])  # (B, T, V)
    targets = tokens[:, 1:]
    scored = (targets != THOUGHT) & (targets != EOT)
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    site = trace.nodes[TOKEN_SITE]
    scored_ll = float(site["fn"].log_prob(site["value"]).sum().detach())
    assert scored_ll == pytest.approx(float(-(nll * scored).sum()), rel=1e-5)
    loss = -trace.log_prob_sum()
    loss.backward()
    thoughts = trace.nodes["thoughts"]["value"]  # (B, T, 1, D)
    assert thoughts.shape == (3, 20, 1, 32)
    assert thoughts[0, 4].abs().sum() > 0 and thoughts[0, 0].abs().sum() == 0  # row 0's thought is at 4
    assert all(p.grad is not None for p in family.decoder.blocks.parameters())


def test_bad_token_ids_are_refused():
    with pytest.raises(ConfigError, match="thought_id 99 is not a token id"):
        Coconut(Decoder(tiny_config(n_latent=0)), thought_id=99)


def test_a_prompt_with_thoughts_costs_one_pass():
    """start_decode runs the prompt's thoughts through the cache: about the FLOPs of one decoder pass
    over the prompt, not one pass per thought."""
    from torch.utils.flop_counter import FlopCounterMode

    family = coconut().eval()
    tokens = with_thoughts()[:, :12]  # rows with 1-3 thoughts in their prompt
    counts = []
    for run in (lambda: family.start_decode(tokens), lambda: family.decoder.hidden_states(tokens)):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            run()
        counts.append(counter.get_total_flops())
    assert counts[0] <= 1.25 * counts[1], counts


@pytest.mark.parametrize("window", [None, 4])
def test_the_segmented_training_pass_has_the_full_passes_gradients(window):
    """Pass i runs only the positions not yet final against a cache kept in the graph: the logits
    and every parameter's gradient equal those of n + 1 full passes (fp32)."""
    family = coconut(window=window)
    tokens = with_thoughts(batch=4, length=24)
    tokens[3, 15:19] = THOUGHT  # a fourth row with a later, longer run
    logits, grads = [], []
    for run in (family.exact_logits, family.logits_by_full_passes):
        family.zero_grad()
        out = run(tokens)  # (B, T, V)
        (out.square().mean() + out[:, :, 7].sum()).backward()
        logits.append(out.detach())
        grads.append([p.grad.clone() for p in family.parameters()])
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_a_training_pass_with_thoughts_costs_about_one_pass():
    """Three thoughts per row cost well under the four full passes of the plain schedule."""
    from torch.utils.flop_counter import FlopCounterMode

    family = coconut()
    tokens = with_thoughts(length=24)
    counts = []
    for run in (family.exact_logits, family.decoder):
        counter = FlopCounterMode(display=False)
        with counter:
            run(tokens)
        counts.append(counter.get_total_flops())
    assert counts[0] <= 1.5 * counts[1], counts
