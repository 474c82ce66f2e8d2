"""The looped decoder (family "looped"): a cheap extra-compute baseline on the same machinery.

No latent thought. Prior: none in effect (`ContextDelta` documents the degenerate case); guide:
the empty guide ("none"); the ELBO is the summed token cross-entropy. Budget knob: loops L over
the block stack (Lx FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltm.core.errors import ConfigError
from ltm.models.attention import causal_mask
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState
from ltm.models.kv_cache import KVCache
from ltm.ponder.token_level import TokenLevelFamily


@dataclass
class LoopedOptions:
    """The `looped` config section.

    Attributes:
        loops: Passes L through the shared block stack (1 = the vanilla decoder).
    """

    loops: int = 2


class LoopedDecoder(TokenLevelFamily):
    """The decoder's block stack applied L times per forward with shared weights, then the norm.

    One slot per token; the KV cache holds L * n_layer attention layers (each loop of each block
    keeps its own keys and values).

    Args:
        decoder: A `Decoder` with n_latent == 0.
        loops: Passes L through the block stack (1 = the vanilla decoder).
    """

    name = "looped"
    Options = LoopedOptions
    tied_head = True

    def __init__(self, decoder: Decoder, loops: int = 2):
        super().__init__(decoder)
        if loops < 1:
            raise ConfigError(f"LoopedDecoder: loops must be >= 1, got {loops}.")
        self.loops = loops

    @property
    def cost_per_token(self) -> float:
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
            x = dec.run_blocks(x, cos=cos, sin=sin, mask=mask, is_causal=is_causal, cache=cache,
                               first_layer=loop * cfg.n_layer)
        if cache is not None:
            cache.advance(T)
        return dec.norm(x)  # (B, T, D)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        cfg, p = self.decoder.cfg, self.decoder.embed.weight
        return KVCache(cfg.n_layer * self.loops, batch_size, cfg.n_kv_head, cfg.head_dim, max_len,
                       p.device, p.dtype)

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.hidden_states(inputs), None  # (B, T, D)

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.train_logits(tokens)[0]  # (B, T, V)

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, DecodeState]:
        cache = self.new_cache(tokens.shape[0], max_len or self.decoder.cfg.block_size)
        logits = self.decoder.logits(self.hidden_states(tokens, cache)[:, -1])  # (B, V)
        return logits, DecodeState(cache, tokens.shape[1])

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        h = self.hidden_states(token[:, None], state.cache)[:, -1]  # (B, D)
        state.position += 1
        return self.decoder.logits(h), state  # (B, V)
