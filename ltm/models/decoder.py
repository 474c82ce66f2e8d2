"""Llama-style decoder shared by every model family.

RMSNorm, RoPE, SwiGLU, tied embeddings, no biases; causal self-attention through
`scaled_dot_product_attention`; optional cross-attention in every layer to that layer's slice of
the latent thought vectors (N_z vectors split evenly over layers, as in the LTM paper); a KV cache
for incremental decoding.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ltm.core.errors import DataError
from ltm.models.attention import CrossAttention, SelfAttention, causal_mask
from ltm.models.config import DecoderConfig
from ltm.models.kv_cache import KVCache
from ltm.models.layers import RMSNorm, SwiGLU, rope_tables


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, SwiGLU."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.cross = None
        if cfg.n_latent > 0:
            self.cross_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.cross = CrossAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x: torch.Tensor, *, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, is_causal: bool, latents: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0, cells=None) -> torch.Tensor:
        """x (B, T, D); or (n, D), the occupied `cells` of a (B, T) layout (no cross-attention).

        Args:
            cos, sin: RoPE tables of the queries' positions.
            mask, is_causal: The self-attention mask (True = may attend), or is_causal with none.
            latents: This layer's slice of the latent vectors (B, N_z/L, D_z), with cross-attention.
            cache, layer: The KV cache and the layer index it stores this block's keys under.
            cells: `ltm.models.attention.Cells`: x holds only the occupied cells of a layout.
        """
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache, layer, cells)
        if self.cross is not None:
            x = x + self.cross(self.cross_norm(x), latents)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    """Causal language-model decoder, optionally conditioned on latent vectors z (B, N_z, D_z)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # Activation checkpointing (a training setting, not saved): with gradients on and no KV
        # cache, each block keeps only its input and recomputes the rest in the backward pass.
        self.checkpoint_blocks = False
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.block_size, cfg.rope_base, cfg.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)  # (P, hd/2)
        self.register_buffer("rope_sin", sin, persistent=False)  # (P, hd/2)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual outputs
            if name.endswith(("out.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` slots."""
        p = self.embed.weight
        return KVCache(self.cfg.n_layer, batch_size, self.cfg.n_kv_head, self.cfg.head_dim,
                       max_len or self.cfg.block_size, p.device, p.dtype)

    def hidden_states(self, tokens: torch.Tensor | None = None, *,
                      embeds: torch.Tensor | None = None,
                      latents: torch.Tensor | None = None,
                      positions: torch.Tensor | None = None,
                      cache: KVCache | None = None,
                      attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, D).

        Args:
            tokens: Token ids (B, T); or give `embeds` (B, T, D) instead.
            latents: Latent vectors (B, N_z, D_z), required when the config has n_latent > 0.
            positions: RoPE position ids (T,); default: the next T positions of the cache.
            cache: KV cache to read from and append to.
            attn_mask: Boolean (T, S) or (B, 1, T, S) mask (True = may attend) replacing the
                causal one, for families with their own attention pattern.
        """
        x = self.embed(tokens) if embeds is None else embeds  # (B, T, D)
        B, T, _ = x.shape
        start = 0 if cache is None else cache.length
        if cache is not None:
            cache.check_room(T)
        if positions is None:
            if start + T > self.cfg.block_size:
                raise DataError(
                    f"sequence of {start + T} positions exceeds the model's block_size "
                    f"{self.cfg.block_size}; shorten the input or train with a larger block_size.")
            positions = torch.arange(start, start + T, device=x.device)
        elif int(positions.max()) >= self.cfg.block_size:
            raise DataError(f"position id {int(positions.max())} exceeds the model's block_size "
                            f"{self.cfg.block_size}.")
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (T, hd/2) each
        if attn_mask is None:
            mask, is_causal = causal_mask(T, start + T, self.cfg.window, x.device)
        else:
            mask, is_causal = attn_mask, False
        x = self.run_blocks(x, cos=cos, sin=sin, mask=mask, is_causal=is_causal,
                            latents=self._latent_slices(latents, B), cache=cache)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def run_blocks(self, x: torch.Tensor, *, cos: torch.Tensor, sin: torch.Tensor,
                   mask: torch.Tensor | None, is_causal: bool, latents: list | None = None,
                   cache: KVCache | None = None, cells=None, first_layer: int = 0) -> torch.Tensor:
        """The layer loop: every block in turn on x (B, T, D) (or the n occupied `cells`, (n, D)),
        before the final norm; the cache's layer index of block i is `first_layer + i` (a looped
        stack runs the blocks again under new indices). Keyword arguments as `Block.forward`;
        `latents` holds one slice per layer. With `checkpoint_blocks` set, gradients on and no
        cache, each block runs under `torch.utils.checkpoint` (non-reentrant): its activations
        are recomputed in the backward pass instead of kept."""
        recompute = self.checkpoint_blocks and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            kwargs = dict(cos=cos, sin=sin, mask=mask, is_causal=is_causal,
                          latents=None if latents is None else latents[i], cache=cache,
                          layer=first_layer + i, cells=cells)
            x = checkpoint(block, x, use_reentrant=False, **kwargs) if recompute else block(x, **kwargs)
        return x

    def _latent_slices(self, latents: torch.Tensor | None, batch: int) -> list:
        cfg = self.cfg
        if cfg.n_latent == 0:
            if latents is not None:
                raise ValueError("latents were given but the decoder has n_latent=0 "
                                 "(no cross-attention); build it with n_latent > 0.")
            return [None] * cfg.n_layer
        expected = (batch, cfg.n_latent, cfg.d_latent)
        if latents is None or tuple(latents.shape) != expected:
            got = None if latents is None else tuple(latents.shape)
            raise ValueError(f"decoder expects latents of shape {expected} "
                             f"(batch, n_latent, d_latent), got {got}.")
        return list(latents.split(cfg.latents_per_layer, dim=1))  # L x (B, N_z/L, D_z)

    @property
    def head_weight(self) -> torch.Tensor:
        """The output head (V, D): the token embedding, or the head of its own when untied."""
        return self.embed.weight if self.head is None else self.head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head: (B, T, D) -> (B, T, V)."""
        return hidden @ self.head_weight.T

    def forward(self, tokens: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Next-token logits (B, T, V); keyword arguments as in `hidden_states`."""
        return self.logits(self.hidden_states(tokens, **kwargs))
