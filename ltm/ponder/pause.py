"""Pause tokens (family "pause"): a cheap extra-compute baseline on the same machinery.

No latent thought. Prior: none in effect (`ContextDelta` documents the degenerate case); guide:
the empty guide ("none"); the ELBO is the summed token cross-entropy. Budget knob: pause slots P
per token ((P+1)x decode FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ltm.core.errors import ConfigError
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState
from ltm.models.kv_cache import KVCache
from ltm.ponder.slots import interleave, slot_mask, slot_positions
from ltm.ponder.token_level import TokenLevelFamily


@dataclass
class PauseOptions:
    """The `pause` config section.

    Attributes:
        pauses: Learned pause slots P after every token (0 = the vanilla decoder).
    """

    pauses: int = 1


class PauseTokens(TokenLevelFamily):
    """P learned pause embeddings after every token: slots `[x1, p_1..p_P, x2, p_1..p_P, ...]`.

    Every slot of token t has position id t; the next token is predicted from token t's last
    pause slot (so each prediction gets P extra slots of computation); pause slots are never
    targets. The pause inputs are constants, so training, prefill and every decode step are each
    a single decoder pass (a decode step feeds P+1 slots at once).

    Args:
        decoder: A `Decoder` with n_latent == 0.
        pauses: Pause slots P per token (0 = the vanilla decoder).
    """

    name = "pause"
    Options = PauseOptions
    tied_head = True

    def __init__(self, decoder: Decoder, pauses: int = 1):
        super().__init__(decoder)
        if pauses < 0:
            raise ConfigError(f"PauseTokens: pauses must be >= 0, got {pauses}.")
        self.pauses = pauses
        self.slots_per_token = pauses + 1
        self.pause_embed = nn.Parameter(torch.randn(pauses, decoder.cfg.d_model) * 0.02)  # (P, D)

    def _slots(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        pause = self.pause_embed.expand(B, T, -1, -1)  # (B, T, P, D)
        return interleave(self.decoder.embed(tokens), pause)  # (B, T*(P+1), D)

    def _hidden(self, tokens: torch.Tensor, first: int, cache: KVCache | None) -> torch.Tensor:
        """Last-slot hidden states (B, T, D) of `tokens` (B, T) whose first token is at `first`."""
        B, T = tokens.shape
        G = self.slots_per_token
        n_key = (0 if cache is None else cache.length) + T * G
        h = self.decoder.hidden_states(embeds=self._slots(tokens),
                                       positions=slot_positions(first, T, G, tokens.device),
                                       cache=cache, attn_mask=self._mask(T * G, n_key, tokens.device))
        return h.view(B, T, G, -1)[:, :, -1]  # (B, T, D)

    def _mask(self, n_query: int, n_key: int, device) -> torch.Tensor | None:
        # None without a window: the decoder's own causal mask over slots is then exact
        return slot_mask(n_query, n_key, self.slots_per_token, self.decoder.cfg.window, device)

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        self.check_length(inputs.shape[1])
        return self._hidden(inputs, 0, None), None  # (B, T, D)

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.train_logits(tokens)[0]  # (B, T, V): nothing to solve, already exact

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, DecodeState]:
        B, P = tokens.shape
        self.check_length(P)
        cache = self.decoder.new_cache(B, self.slots_per_token * (max_len or self.decoder.cfg.block_size))
        logits = self.decoder.logits(self._hidden(tokens, 0, cache)[:, -1])  # (B, V)
        return logits, DecodeState(cache, P)

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        self.check_length(state.position + 1)
        h = self._hidden(token[:, None], state.position, state.cache)[:, -1]  # (B, D)
        state.position += 1
        return self.decoder.logits(h), state  # (B, V)
