"""Coconut (Hao et al. 2024, "Training Large Language Models to Reason in a Continuous Latent
Space"; family "coconut"): continuous thoughts in place of written reasoning steps.

A block may hold thought slots: positions after the first whose token is `<|thought|>` (between `<|bot|>` and
`<|eot|>` in the reasoning data, `ltm.data.reasoning`). A thought slot's input is not that token's
embedding but the last hidden state (after the final norm) of the position before it, so a chain
of c thoughts is c more serial steps of the whole decoder. Thought and `<|eot|>` targets are not
scored: the data places them, the model never has to write them.

Prior: `ContextDelta`, a Delta at the hidden state (the thoughts are written as the deterministic
site "thoughts", (B, T, 1, D), zero where a position holds no thought). Guide: none ("none"); the
ELBO is the summed cross-entropy of the scored tokens. A block without thought slots is computed
exactly as by the vanilla decoder, so stage 0 of the curriculum is vanilla with written steps.

Training fills the thoughts in n + 1 passes for n thoughts per row at most: pass i reads the i-th
thought of every row off the hidden states of pass i - 1 (exact, since everything before it is
already exact), the last pass gives the logits; gradients flow through every pass. As in the
official implementation, each pass runs only the positions not yet final, reading the rest from a
KV cache kept in the autograd graph (`ConcatKVCache`): a training step costs about one decoder
pass plus a short segment per thought. Under activation checkpointing the n + 1 full passes run
instead (a recomputed block must not write to the cache twice). Decoding with a
KV cache feeds a thought slot the previous step's hidden state, so cached decoding equals the
full pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch

from ltm.core.errors import ConfigError
from ltm.core.loss_mask import split_block
from ltm.core.sites import IGNORE_INDEX, SEQUENCE_PLATE, THOUGHT_SITE, TOKEN_SITE
from ltm.data.reasoning import EOT, THOUGHT
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState
from ltm.ponder.grad_cache import ConcatKVCache
from ltm.ponder.token_level import TokenLevelFamily


@dataclass
class CoconutOptions:
    """The `coconut` config section.

    Attributes:
        thought_id: Token id of the `<|thought|>` slot (the reasoning tokenizer's; see
            `ltm.data.reasoning.THOUGHT`).
        eot_id: Token id of `<|eot|>`, which ends a run of thoughts (its target is not scored).
    """

    thought_id: int = 5
    eot_id: int = 4


@dataclass
class CoconutState(DecodeState):
    """A decode state that also keeps each row's last hidden state (B, D): a thought's input."""

    last_hidden: torch.Tensor | None = None


class Coconut(TokenLevelFamily):
    """A decoder whose `<|thought|>` slots take the previous position's last hidden state as input.

    Args:
        decoder: A `Decoder` with n_latent == 0.
        thought_id: Token id of the thought slot.
        eot_id: Token id that ends a run of thoughts.
    """

    name = "coconut"
    Options = CoconutOptions
    tied_head = True

    def __init__(self, decoder: Decoder, thought_id: int = 5, eot_id: int = 4):
        super().__init__(decoder)
        for what, i in (("thought_id", thought_id), ("eot_id", eot_id)):
            if not 0 <= i < decoder.cfg.vocab_size:
                raise ConfigError(f"coconut's {what} {i} is not a token id of the vocabulary "
                                  f"[0, {decoder.cfg.vocab_size}).")
        self.thought_id, self.eot_id = thought_id, eot_id

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse a tokenizer whose `<|thought|>` or `<|eot|>` is not this family's id (prose has
        none: one of its ordinary tokens would be taken for a thought slot)."""
        for what, name, mine in (("thought_id", THOUGHT, self.thought_id), ("eot_id", EOT, self.eot_id)):
            theirs = tokenizer.token_to_id(name)
            if theirs != mine:
                flag = f"--{self.name.replace('_', '-')}.{what.replace('_', '-')}"
                fix = f"set {flag} {theirs}" if theirs is not None else "train on a reasoning task"
                raise ConfigError(f"coconut's {what} is {mine} but the tokenizer's {name} is {theirs}; {fix} "
                                  f"(--dataset 'reasoning:addition?digits=4&stages=4&stage_steps=500').")

    def _thought_slots(self, tokens: torch.Tensor) -> torch.Tensor:
        """Where `tokens` (B, T) hold thought slots (B, T); the first position never does (no
        hidden state comes before it: a thought token there is read as a token)."""
        slots = tokens == self.thought_id  # (B, T)
        slots[:, 0] = False
        return slots

    def _thought_rank(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T): i at the i-th thought slot of its row, 0 elsewhere."""
        is_thought = self._thought_slots(tokens)  # (B, T)
        return is_thought.cumsum(1) * is_thought

    def _filled(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings (B, T, D) of `tokens` (B, T) with every thought slot filled, and the
        final hidden states (B, T, D).

        Pass i runs only the positions from the earliest i-th thought of any row up to the last
        one, reading everything before from a cache that stays in the autograd graph; so n
        thoughts per row cost about one decoder pass plus n short segments, not n + 1 passes."""
        self.check_length(tokens.shape[1])
        rank = self._thought_rank(tokens)  # (B, T)
        if (self.decoder.checkpoint_blocks and torch.is_grad_enabled()) or not rank.any():
            return self._filled_by_full_passes(tokens, rank)
        x = self.decoder.embed(tokens)  # (B, T, D)
        cache = ConcatKVCache(self.decoder.cfg.n_layer)
        final, start = [], 0  # hidden states no later pass changes; the first position not yet final
        for i in range(1, int(rank.max()) + 1):
            rows, cols = (rank == i).nonzero(as_tuple=True)  # (m,) each: every row's i-th thought
            h = self.decoder.hidden_states(embeds=x[:, start:int(cols.max())], cache=cache)  # (B, S, D)
            x = x.index_put((rows, cols), h[rows, cols - 1 - start])  # (B, T, D)
            done = int(cols.min())  # positions before every i-th thought are final
            final.append(h[:, :done - start])
            cache.truncate(done)
            start = done
        final.append(self.decoder.hidden_states(embeds=x[:, start:], cache=cache))  # (B, T - start, D)
        return x, torch.cat(final, 1)  # (B, T, D) each

    def _filled_by_full_passes(self, tokens: torch.Tensor, rank: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`_filled` as n + 1 passes over the whole block, each filling every row's next thought.
        Used under activation checkpointing (a block recomputed in the backward pass must not write
        to a cache again) and without thoughts (one pass)."""
        x = self.decoder.embed(tokens)  # (B, T, D)
        h = self.decoder.hidden_states(embeds=x)  # (B, T, D)
        for i in range(1, int(rank.max()) + 1):
            before = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)  # (B, T, D): h of t - 1
            x = torch.where((rank == i)[..., None], before, x)  # (B, T, D)
            h = self.decoder.hidden_states(embeds=x)  # (B, T, D)
        return x, h

    def logits_by_full_passes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of `tokens` (B, T) by the plain schedule of n + 1 passes over the whole
        block: the same function as `exact_logits`, at n + 1 times the cost (a reference)."""
        return self.decoder.logits(self._filled_by_full_passes(tokens, self._thought_rank(tokens))[1])

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, h = self._filled(inputs)  # (B, T, D) each
        thoughts = (x * self._thought_slots(inputs)[..., None])[:, :, None]  # (B, T, 1, D)
        return h, thoughts

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over blocks `tokens` (B, T+1): predicts the tokens after each position, but
        not the thought slots and `<|eot|>`, which the data places."""
        inputs, targets = split_block(tokens)  # (B, T) each
        placed = (targets == self.thought_id) | (targets == self.eot_id)  # (B, T)
        targets = targets.masked_fill(placed, IGNORE_INDEX)  # (B, T)
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            likelihood, thoughts = self.train_likelihood(inputs)
            pyro.deterministic(THOUGHT_SITE, thoughts, event_dim=thoughts.dim() - 1)
            pyro.sample(TOKEN_SITE, likelihood, obs=targets)
        return thoughts

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder.logits(self._filled(tokens)[1])  # (B, T, V)

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, CoconutState]:
        """The prompt up to its first thought slot in one cached pass, the rest one position at a
        time (a thought slot then reads the hidden state just computed): one decoder pass over the
        prompt in all, whatever its number of thoughts."""
        self.check_length(tokens.shape[1])
        slots = self._thought_slots(tokens).any(0)  # (P,): a slot in some row
        first = int(slots.nonzero()[0]) if slots.any() else tokens.shape[1]
        cache = self.decoder.new_cache(tokens.shape[0], max_len)
        h = self.decoder.hidden_states(tokens[:, :first], cache=cache)[:, -1]  # (B, D)
        state = CoconutState(cache, first, last_hidden=h)
        logits = self.decoder.logits(h)  # (B, V)
        for t in range(first, tokens.shape[1]):
            logits, state = self.decode_step(tokens[:, t], state)
        return logits, state

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: CoconutState) -> tuple[torch.Tensor, CoconutState]:
        self.check_length(state.position + 1)
        x = torch.where((token == self.thought_id)[:, None], state.last_hidden,
                        self.decoder.embed(token))  # (B, D)
        h = self.decoder.hidden_states(embeds=x[:, None], cache=state.cache)[:, -1]  # (B, D)
        state.position, state.last_hidden = state.position + 1, h
        return self.decoder.logits(h), state
