"""Sampling settings, logits filtering, per-row random streams, and batches of ragged prompts.

Reproducibility rule: the row at index i of a request (rows in prompt-major order) is row
r = first_row + i, and draws all its randomness from two CPU `torch.Generator`s of its own, never
from the global RNG. Stream s of row r is seeded with

    row_seed(seed, r, s) = ((seed * 1_000_003 + r) * 2 + s) mod 2**63

where s = TOKEN_STREAM (0) gives one uniform per decoding step, and s = LATENT_STREAM (1) gives the
inner loop's noise draw (N, D) and then the noise (N, D) of the final draw of z. So output is a pure
function of (model, prompts, config, seed), and row i of a batched call equals a one-row call with
`first_row=i` (same seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

TOKEN_STREAM = 0  # one uniform per row per decoding step
LATENT_STREAM = 1  # the inner loop's noise draw, then the draw of z from q (or from the prior)
_SEED_STRIDE = 1_000_003


@dataclass
class SamplingConfig:
    """How tokens are drawn from the decoder.

    Attributes:
        max_new_tokens: Most tokens generated per row (the prompt is not counted).
        temperature: Divides the logits; 0 means greedy (argmax).
        top_k: Keep only the k most likely tokens (None = all).
        top_p: Nucleus sampling: keep the smallest set of most likely tokens whose probability
            mass is >= top_p (None = all).
        seed: Seed of the per-row random streams (see the module docstring for the rule).
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
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}.")
        if not self.temperature >= 0:  # also catches NaN
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        _check_filters(self.top_k, self.top_p)
        if self.eos_id is not None and self.eos_id < 0:
            raise ValueError(f"eos_id must be a token id >= 0 or None, got {self.eos_id}.")


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None (no top-k filtering), got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] or be None (no nucleus filtering), got {top_p}.")


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


def row_seed(seed: int, row: int, stream: int) -> int:
    """The seed of one row's random stream (see the module docstring)."""
    return ((seed * _SEED_STRIDE + row) * 2 + stream) % 2**63


def row_generators(seed: int, first_row: int, n: int, stream: int) -> list[torch.Generator]:
    """CPU generators of rows first_row .. first_row + n - 1 for one stream."""
    return [torch.Generator().manual_seed(row_seed(seed, first_row + i, stream)) for i in range(n)]


def row_normals(generators: list[torch.Generator], shape: tuple[int, ...],
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One standard-normal draw of `shape` per row, stacked: (B, *shape)."""
    draws = [torch.randn(shape, generator=g) for g in generators]
    return torch.stack(draws).to(device=device, dtype=dtype)  # (B, *shape)


def next_tokens(logits: torch.Tensor, cfg: SamplingConfig,
                generators: list[torch.Generator]) -> torch.Tensor:
    """Draw one token per row from (B, V) logits: greedy at temperature 0, else by inverse CDF.

    Each row takes exactly one uniform from its own generator per call (also when greedy), so a
    row's draws do not depend on which other rows share the batch.
    """
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])  # (B,)
    if cfg.temperature == 0:
        return logits.argmax(-1)  # (B,)
    scaled = filter_logits(logits.double() / cfg.temperature, cfg.top_k, cfg.top_p)  # (B, V)
    cdf = scaled.softmax(-1).cumsum(-1)  # (B, V)
    target = u.to(cdf.device)[:, None] * cdf[:, -1:]  # (B, 1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # (B,): first cdf > target
    last_kept = (cdf >= cdf[:, -1:]).double().argmax(-1)  # (B,): where the cdf reaches its total
    return torch.minimum(index, last_kept)  # (B,); guards a target rounded up to the total


def sample_loop(first_logits: torch.Tensor, advance: Callable[[int, torch.Tensor], torch.Tensor],
                cfg: SamplingConfig, generators: list[torch.Generator],
                on_step: Callable | None = None) -> list[list[int]]:
    """Draw up to `cfg.max_new_tokens` tokens per row; every row stops once all emitted eos.

    Args:
        first_logits: Next-token logits (B, V) after the prompts.
        advance: `advance(t, tokens (B,))` takes the tokens drawn at step t and returns the logits
            (B, V) of step t + 1 (it is not called after the last step).
        cfg: Sampling settings.
        generators: One generator per row (its token stream).
        on_step: Called after each step as on_step(step, logits (B, V), tokens (B,)).

    Returns:
        The drawn tokens of each row, cut after `cfg.eos_id`.
    """
    logits, drawn = first_logits, []
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)  # (B,)
    for t in range(cfg.max_new_tokens):
        tokens = next_tokens(logits, cfg, generators)  # (B,)
        drawn.append(tokens)
        if on_step is not None:
            on_step(t, logits, tokens)
        if cfg.eos_id is not None:
            done |= tokens == cfg.eos_id
            if bool(done.all()):
                break
        if t + 1 < cfg.max_new_tokens:
            logits = advance(t, tokens)  # (B, V)
    return trim_after_eos(torch.stack(drawn, dim=1).tolist(), cfg.eos_id)  # from (B, steps)


def check_prompts(decoder, prompts: list[list[int]], cfg: SamplingConfig) -> None:
    """Raise ValueError for an empty request, an empty prompt, a bad id, or too long a request."""
    if not prompts:
        raise ValueError("no prompts given: pass a list of token-id lists, e.g. [[bos_id]].")
    V, block = decoder.cfg.vocab_size, decoder.cfg.block_size
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; start it with at least one token (e.g. a BOS id).")
        if min(p) < 0 or max(p) >= V:
            raise ValueError(f"prompt {i} holds token ids outside [0, {V}) (the model's vocab_size).")
        if len(p) + cfg.max_new_tokens > block:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens and max_new_tokens is {cfg.max_new_tokens}: "
                f"{len(p) + cfg.max_new_tokens} exceeds the decoder's block_size {block}; shorten the "
                f"prompt (keep its last {max(block - cfg.max_new_tokens, 0)} tokens) or lower "
                f"max_new_tokens.")
    if cfg.eos_id is not None and cfg.eos_id >= V:
        raise ValueError(f"eos_id {cfg.eos_id} is outside the model's vocabulary [0, {V}).")


def attention_mask(valid: torch.Tensor, first_query: int, window: int | None) -> torch.Tensor:
    """Boolean mask (B, 1, Tq, S), True = may attend, for queries at slots first_query .. S-1.

    Causal (and within `window`), and hides pad slots (`valid` (B, S) False). A pad query sees
    itself, so no row is empty (an all-masked row would make attention return NaN).
    """
    S = valid.shape[1]
    q = torch.arange(first_query, S, device=valid.device)[:, None]  # (Tq, 1)
    k = torch.arange(S, device=valid.device)[None, :]  # (1, S)
    allowed = k <= q  # (Tq, S)
    if window is not None:
        allowed = allowed & (q - k < window)  # slots of real tokens are contiguous after left padding
    mask = (allowed[None] & valid[:, None, :]) | (k == q)[None]  # (B, Tq, S)
    return mask[:, None]  # (B, 1, Tq, S)


def trim_after_eos(rows: list[list[int]], eos_id: int | None) -> list[list[int]]:
    """Cut each row after its first `eos_id` (kept)."""
    if eos_id is None:
        return rows
    return [r[:r.index(eos_id) + 1] if eos_id in r else r for r in rows]


def left_pad(prompts: list[list[int]], slots: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad ragged prompts so that every prompt ends at slot P - 1 (P = longest prompt).

    Returns:
        tokens (B, slots) (pad id 0), per-row position ids (B, slots) (a row's first real token
        has position 0; pad slots get 0) and `valid` (B, slots), False on pad slots.
    """
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
    P = int(lengths.max())
    pad = P - lengths  # (B,) pad slots per row
    tokens = torch.zeros(len(prompts), slots, dtype=torch.long, device=device)  # (B, S)
    for i, p in enumerate(prompts):
        tokens[i, P - len(p):P] = torch.tensor(p, device=device)
    index = torch.arange(slots, device=device)[None, :]  # (1, S)
    valid = index >= pad[:, None]  # (B, S)
    positions = (index - pad[:, None]).clamp(min=0)  # (B, S)
    return tokens, positions, valid
