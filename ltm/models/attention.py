"""Causal self-attention (optional sliding window, KV cache) and cross-attention to latents.

Under bf16 autocast the projections run in bf16; the attention kernel itself runs in fp32 where
bf16 attention does not pay (a CPU without AMX: `ltm.core.hardware.bf16_attention_pays`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ltm.core.hardware import bf16_attention_pays
from ltm.models.config import DecoderConfig
from ltm.models.kv_cache import KVCache
from ltm.models.layers import apply_rope


def causal_mask(t_query: int, t_key: int, window: int | None,
                device: torch.device) -> tuple[torch.Tensor | None, bool]:
    """Mask for the last t_query of t_key slots attending causally (and within `window`).

    Returns (mask, is_causal) for `scaled_dot_product_attention`. No tensor is built when the
    fast paths apply: a full square causal block (`is_causal`), or one query seeing everything.
    """
    covers = window is None or window >= t_key
    if covers and t_query == t_key:
        return None, True
    if covers and t_query == 1:
        return None, False
    q_pos = torch.arange(t_key - t_query, t_key, device=device)[:, None]  # (Tq, 1)
    k_pos = torch.arange(t_key, device=device)[None, :]  # (1, Tk)
    mask = k_pos <= q_pos
    if window is not None:
        mask &= q_pos - k_pos < window
    return mask, False  # (Tq, Tk) bool, True = may attend


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """`scaled_dot_product_attention(q, k, v, **kwargs)`; under bf16 autocast on a device where bf16
    attention does not pay, in fp32 (q, k, v upcast; the output fp32, the next projection casts it)."""
    device = q.device.type
    if (torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16
            and not bf16_attention_pays(q.device)):
        with torch.autocast(device, enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


@dataclass(frozen=True)
class Cells:
    """Occupied cells of a (B, T) layout: `index` = (rows (n,), columns (n,)), as from `nonzero`."""

    index: tuple[torch.Tensor, torch.Tensor]
    layout: tuple[int, int]


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary position embeddings; grouped-query attention
    when the config has fewer key/value heads than query heads (each key/value head then serves
    n_head / n_kv_head query heads, in order, as Hugging Face's Llama does)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        width = (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim  # queries, keys, values
        self.qkv = nn.Linear(cfg.d_model, width, bias=cfg.attn_bias)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, is_causal: bool,
                cache: KVCache | None = None, layer: int = 0, cells: Cells | None = None) -> torch.Tensor:
        """Attention of x (B, T, D); or, with `cells`, of x (n, D) = the n occupied cells of a
        (B, T) layout (the projections run on those rows alone; empty cells get zero queries,
        keys and values and their outputs are dropped). Returns the shape of x."""
        qkv = self.qkv(x)  # (B, T, (H + 2 KV) hd) or (n, ...)
        if cells is not None:
            qkv = qkv.new_zeros(*cells.layout, qkv.shape[-1]).index_put(cells.index, qkv)  # (B, T, ...)
        B, T, _ = qkv.shape
        H, KV, hd = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = qkv.view(B, T, H + 2 * KV, hd).transpose(1, 2).split((H, KV, KV), dim=1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, hd), (B, KV, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, KV, S, hd)
        if KV < H:  # each key/value head serves H / KV query heads
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        y = attend(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, H, T, hd)
        y = y.transpose(1, 2)  # (B, T, H, hd)
        return self.out(y.reshape(B, T, H * hd) if cells is None else y[cells.index].flatten(1))


class CrossAttention(nn.Module):
    """Attention from every token to this layer's slice of latent vectors (no mask, no RoPE).

    Keys and values project from the latent width, which may differ from the model width.
    """

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.kv = nn.Linear(cfg.d_latent, 2 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        N = latents.shape[1]
        q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k, v = self.kv(latents).view(B, N, 2, self.n_head, self.head_dim).transpose(1, 3).unbind(2)
        y = attend(q, k, v)  # (B, H, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
