"""Slot layout of families that give each token several decoder slots sharing its position id.

Token t owns slots t*G .. t*G + G - 1 (G = slots per token): its token slot first, then its
thought or pause slots. Every slot of token t has RoPE position t; attention is causal over slots.
"""

from __future__ import annotations

import torch


def interleave(token_inputs: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """Slot inputs (B, T*G, D) from token inputs (B, T, D) and per-token extra slots (B, T, G-1, D)."""
    B, T, D = token_inputs.shape
    slots = torch.cat([token_inputs[:, :, None], extra], dim=2)  # (B, T, G, D)
    return slots.reshape(B, -1, D)  # (B, T*G, D)


def slot_positions(first_token: int, n_tokens: int, group: int, device) -> torch.Tensor:
    """Position ids (n_tokens*G,) of tokens first_token .. first_token + n_tokens - 1: t, G times."""
    tokens = torch.arange(first_token, first_token + n_tokens, device=device)  # (T,)
    return tokens.repeat_interleave(group)  # (T*G,)


def slot_mask(n_query: int, n_key: int, group: int, window: int | None, device) -> torch.Tensor | None:
    """Attention mask for the last `n_query` of `n_key` slots: causal over slots, and with a
    sliding `window` counted in tokens (a slot sees the slots of its own token and of the
    window - 1 tokens before it). None when no window: the decoder's causal default is exact.

    Returns:
        None, or a bool (n_query, n_key) mask, True = may attend.
    """
    if window is None:
        return None
    q = torch.arange(n_key - n_query, n_key, device=device)[:, None]  # (Tq, 1)
    k = torch.arange(n_key, device=device)[None, :]  # (1, Tk)
    return (k <= q) & (q // group - k // group < window)  # (Tq, Tk)
