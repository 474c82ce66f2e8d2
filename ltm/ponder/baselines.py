"""Cheap extra-compute baselines on the same machinery: pause tokens and a looped decoder.

Neither has a latent thought. Prior: none in effect (`ContextDelta` documents the degenerate
case); guide: the empty guide ("none"); the ELBO is the summed token cross-entropy. Budget knobs:
pause slots P per token ((P+1)x decode FLOPs) and loops L over the block stack (Lx FLOPs).
"""

from __future__ import annotations

import torch
from torch import nn

from ltm.attention import causal_mask
from ltm.decoder import Decoder
from ltm.kv_cache import KVCache
from ltm.ponder.family import DecodeState, TokenLevelFamily
from ltm.ponder.slots import interleave, slot_mask, slot_positions


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

    def __init__(self, decoder: Decoder, pauses: int = 1):
        super().__init__(decoder)
        if pauses < 0:
            raise ValueError(f"PauseTokens: pauses must be >= 0, got {pauses}.")
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

    def train_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        self.check_length(inputs.shape[1])
        return self.decoder.logits(self._hidden(inputs, 0, None)), None  # (B, T, V)

    def full_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.train_logits(tokens)[0]  # (B, T, V): nothing to solve, already exact

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, max_len: int | None = None
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


class LoopedDecoder(TokenLevelFamily):
    """The decoder's block stack applied L times per forward with shared weights, then the norm.

    One slot per token; the KV cache holds L * n_layer attention layers (each loop of each block
    keeps its own keys and values).

    Args:
        decoder: A `Decoder` with n_latent == 0.
        loops: Passes L through the block stack (1 = the vanilla decoder).
    """

    def __init__(self, decoder: Decoder, loops: int = 2):
        super().__init__(decoder)
        if loops < 1:
            raise ValueError(f"LoopedDecoder: loops must be >= 1, got {loops}.")
        self.loops = loops

    @property
    def stated_cost(self) -> float:
        return float(self.loops)

    def hidden_states(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, D) after L loops, appending to `cache` when given."""
        dec, cfg = self.decoder, self.decoder.cfg
        x = dec.embed(tokens)  # (B, T, D)
        T = x.shape[1]
        start = 0 if cache is None else cache.length
        self.check_length(start + T)
        if cache is not None:
            cache.check_room(T)
        positions = torch.arange(start, start + T, device=x.device)  # (T,)
        cos, sin = dec.rope_cos[positions], dec.rope_sin[positions]  # (T, hd/2) each
        mask, is_causal = causal_mask(T, start + T, cfg.window, x.device)
        for loop in range(self.loops):
            for i, block in enumerate(dec.blocks):
                x = block(x, cos, sin, mask, is_causal, None, cache, loop * cfg.n_layer + i)
        if cache is not None:
            cache.advance(T)
        return dec.norm(x)  # (B, T, D)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        cfg, p = self.decoder.cfg, self.decoder.embed.weight
        return KVCache(cfg.n_layer * self.loops, batch_size, cfg.n_head, cfg.head_dim, max_len,
                       p.device, p.dtype)

    def train_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.decoder.logits(self.hidden_states(inputs)), None  # (B, T, V)

    def full_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.train_logits(tokens)[0]  # (B, T, V)

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, max_len: int | None = None
                ) -> tuple[torch.Tensor, DecodeState]:
        cache = self.new_cache(tokens.shape[0], max_len or self.decoder.cfg.block_size)
        logits = self.decoder.logits(self.hidden_states(tokens, cache)[:, -1])  # (B, V)
        return logits, DecodeState(cache, tokens.shape[1])

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        h = self.hidden_states(token[:, None], state.cache)[:, -1]  # (B, D)
        state.position += 1
        return self.decoder.logits(h), state  # (B, V)
