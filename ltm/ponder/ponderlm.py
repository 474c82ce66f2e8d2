"""PonderLM (v1; "ponderlm"): S pondering passes feeding the expected next-token embedding back in.

Pass 0 reads the token embeddings e_t. After pass s the output distribution p_s(. | x_<=t) becomes
a probability-weighted mixture of input embeddings, m_{t,s} = p_s(. | x_<=t) @ E (E the tied
embedding matrix), which is added to the same position's input: the input of pass s+1 is
e_t + m_{t,0} + ... + m_{t,s}. The loss is the cross-entropy of the final pass S.

As a Pyro program (the degenerate-prior special case):

* prior: `ContextDelta`, the thought m_{t,s} is a deterministic function of its context, written
  as `pyro.deterministic("ponder_{s}", ...)` sites (s = 0 .. S-1);
* guide: empty (registry name "none"): nothing to infer, the KL is zero and the ELBO equals the
  summed token cross-entropy exactly;
* budget knob: the number of pondering passes S (`passes`); S = 0 is the vanilla decoder.

Decoding: pass s at position t reads pass s's keys/values at positions <= t, and its input
depends on pass s-1's output at t only, so each pass keeps its own KV cache. A new token runs
S+1 single-token steps (one per pass, each through its own cache): exactly (S+1)x the work of
vanilla decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch

from ltm.core.errors import ConfigError
from ltm.core.loss_mask import split_block
from ltm.core.sites import SEQUENCE_PLATE, TOKEN_SITE
from ltm.models.decoder import Decoder
from ltm.models.kv_cache import KVCache
from ltm.models.likelihood import TokenSequence
from ltm.ponder.token_level import TokenLevelFamily

PONDER_SITE = "ponder_{}"  # thought of pondering pass s: the mixture m_{., s} (B, T, D)


@dataclass
class PonderLMOptions:
    """The `ponderlm` config section.

    Attributes:
        passes: Pondering passes S (decoding costs S+1 single-token steps per token).
    """

    passes: int = 3


@dataclass
class PonderState:
    """Decoding state of PonderLM: one KV cache per pass (S+1 of them)."""

    caches: list[KVCache]

    @property
    def length(self) -> int:
        """Tokens decoded so far."""
        return self.caches[0].length


class PonderLM(TokenLevelFamily):
    """PonderLM (v1) over a plain decoder (no cross-attention).

    Args:
        decoder: A `Decoder` with n_latent == 0.
        passes: Pondering passes S (>= 0); the model runs S+1 decoder passes.
    """

    name = "ponderlm"
    Options = PonderLMOptions
    tied_head = True

    def __init__(self, decoder: Decoder, passes: int = 3):
        super().__init__(decoder)
        if passes < 0:
            raise ConfigError(f"PonderLM: passes must be >= 0, got {passes}.")
        self.passes = passes

    @property
    def slots_per_token(self) -> int:
        """Single-token decoder steps per decoded token, S+1: the decode cost the paper states."""
        return self.passes + 1

    def ponder(self, inputs: torch.Tensor, caches: list | None = None,
               record: bool = False) -> torch.Tensor:
        """Run the S+1 passes over `inputs` (B, T) and return the final hidden states (B, T, D).

        The intermediate passes' logits are materialised (their probabilities mix the embeddings);
        the final pass's are left to the tied head (`decoder.logits`) or the fused likelihood.

        Args:
            inputs: Token ids (B, T).
            caches: One cache per pass (S+1), read from and appended to; None: no cache.
            record: Record each mixture as a `pyro.deterministic` site (inside a Pyro model).
        """
        dec = self.decoder
        table = dec.embed.weight  # (V, D)
        x = dec.embed(inputs)  # (B, T, D)
        for s in range(self.passes + 1):
            h = dec.hidden_states(embeds=x, cache=None if caches is None else caches[s])  # (B, T, D)
            if s == self.passes:
                return h
            mixture = dec.logits(h).softmax(-1) @ table  # (B, T, D)
            if record:
                mixture = pyro.deterministic(PONDER_SITE.format(s), mixture, event_dim=2)
            x = x + mixture  # (B, T, D)
        raise AssertionError("unreachable")

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over blocks `tokens` (B, T+1): predicts tokens[:, 1:] from the final pass.

        Returns:
            The final-pass hidden states (B, T, D), which the tied head maps to the logits.
        """
        inputs, targets = split_block(tokens)  # (B, T) each
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            h = self.ponder(inputs, record=True)  # (B, T, D)
            pyro.sample(TOKEN_SITE, TokenSequence.from_hidden(h, self.decoder.head_weight),
                        obs=targets)
        return h

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.ponder(inputs), None  # (B, T, D)

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) recomputed over the whole prefix, no cache (the decoding reference)."""
        return self.decoder.logits(self.ponder(tokens))

    def new_state(self, batch_size: int, max_len: int | None = None) -> PonderState:
        """Empty decoding state: S+1 caches for `batch_size` rows of up to `max_len` tokens."""
        return PonderState([self.decoder.new_cache(batch_size, max_len) for _ in range(self.passes + 1)])

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, PonderState]:
        """Run the prompt `tokens` (B, T) through the S+1 cached passes.

        Args:
            tokens: Prompt ids (B, T), T >= 1.
            max_len: Most tokens (prompt + new) the state must hold; default: the block size.

        Returns:
            The next-token logits after the prompt (B, V) and the decoding state.
        """
        state = self.new_state(tokens.shape[0], max_len)
        return self.decoder.logits(self.ponder(tokens, state.caches)[:, -1]), state  # (B, V)

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: PonderState) -> tuple[torch.Tensor, PonderState]:
        """Append one token per row (B,): S+1 single-token steps, one per pass and cache.

        Returns:
            The next-token logits (B, V) and the (updated in place) state.
        """
        return self.decoder.logits(self.ponder(token[:, None], state.caches)[:, 0]), state  # (B, V)
