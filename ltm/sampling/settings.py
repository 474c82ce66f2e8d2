"""Sampling settings: temperature, top-k, top-p, the seed, the cache switch and the stop token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltm.core.errors import ConfigError


@dataclass
class SamplingConfig:
    """How tokens are drawn from the decoder.

    Attributes:
        max_new_tokens: Most tokens generated per row (the prompt is not counted).
        temperature: Divides the logits; 0 means greedy (argmax).
        top_k: Keep only the k most likely tokens (None = all).
        top_p: Nucleus sampling: keep the smallest set of most likely tokens whose probability
            mass is >= top_p (None = all).
        seed: Seed of the per-row random streams (the rule is in `ltm.sampling.streams`).
        use_cache: Decode with a KV cache (True) or recompute the whole prefix at every step;
            both give the same tokens.
        eos_id: A row stops once it emits this id (kept in its output); rows finish independently.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    use_cache: bool = True
    eos_id: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}.")
        if not self.temperature >= 0:  # also catches NaN
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        _check_filters(self.top_k, self.top_p)
        if self.eos_id is not None and self.eos_id < 0:
            raise ConfigError(f"eos_id must be a token id >= 0 or None, got {self.eos_id}.")


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 or None (no top-k filtering), got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must lie in (0, 1] or be None (no nucleus filtering), got {top_p}.")


def filter_logits(logits: torch.Tensor, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Set the logits outside the kept set to -inf.

    Top-k keeps the k largest logits (ties with the k-th are all kept); top-p then keeps the
    smallest set of largest-probability tokens whose mass under softmax(logits) is >= top_p.
    The most likely token is always kept.

    Args:
        logits: Scores (B, V), already divided by the temperature.
        top_k: Tokens to keep by rank, or None.
        top_p: Probability mass to keep, in (0, 1], or None.

    Returns:
        Filtered logits (B, V).
    """
    _check_filters(top_k, top_p)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
        probs = sorted_logits.softmax(-1)  # (B, V)
        mass_before = probs.cumsum(-1) - probs  # (B, V): mass of the strictly more likely tokens
        drop_sorted = mass_before >= top_p  # (B, V); the first token has mass_before 0, so is kept
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V) back in vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))  # (B, V)
    return logits
