"""The decode loop of every model family: KV-cached or recomputed, ragged prompts, per-row streams.

`decode` groups the prompts by length and decodes each group as one batch (no padding, so no
row ever meets another row's padding) through the family's `prefill` / `decode_step`, or through
`full_logits` of the whole prefix at every step without the cache; both give the same tokens.
Row i of a request draws from the token stream of row first_row + i (`ltm.sampling.streams`), one
uniform per step, so a batched request equals one-row requests with `first_row` set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ltm.core.errors import ConfigError, DataError
from ltm.sampling.settings import SamplingConfig, filter_logits
from ltm.sampling.streams import TOKEN_STREAM, row_generators


def group_by_length(prompts: list[list[int]]) -> list[list[int]]:
    """Row indices of the prompts, grouped by prompt length (shortest first)."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    return [rows for _, rows in sorted(groups.items())]


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
        raise DataError("no prompts given: pass a list of token-id lists, e.g. [[bos_id]].")
    V, block = decoder.cfg.vocab_size, decoder.cfg.block_size
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise DataError(f"prompt {i} is empty; start it with at least one token (e.g. a BOS id).")
        if min(p) < 0 or max(p) >= V:
            raise DataError(f"prompt {i} holds token ids outside [0, {V}) (the model's vocab_size).")
        if len(p) + cfg.max_new_tokens > block:
            raise DataError(
                f"prompt {i} has {len(p)} tokens and max_new_tokens is {cfg.max_new_tokens}: "
                f"{len(p) + cfg.max_new_tokens} exceeds the decoder's block_size {block}; shorten the "
                f"prompt (keep its last {max(block - cfg.max_new_tokens, 0)} tokens) or lower "
                f"max_new_tokens.")
    if cfg.eos_id is not None and cfg.eos_id >= V:
        raise ConfigError(f"eos_id {cfg.eos_id} is outside the model's vocabulary [0, {V}).")


def trim_after_eos(rows: list[list[int]], eos_id: int | None) -> list[list[int]]:
    """Cut each row after its first `eos_id` (kept)."""
    if eos_id is None:
        return rows
    return [r[:r.index(eos_id) + 1] if eos_id in r else r for r in rows]


@torch.no_grad()
def decode(family, prompts: list[list[int]], cfg: SamplingConfig, latents: torch.Tensor | None = None,
           *, first_row: int = 0,
           on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> list[list[int]]:
    """Continue each prompt with up to `cfg.max_new_tokens` tokens.

    Args:
        family: A model family (`ltm.models.Family`).
        prompts: Token ids per row; lengths may differ; each holds at least one token.
        cfg: Sampling settings.
        latents: Sequence-level thoughts (B, N, D), one per row, for a `sequence_latent` family.
        first_row: Index of the first row in the request (selects the per-row token streams).
        on_step: Called after each step of each equal-length group as
            on_step(step, logits (G, V), tokens (G,)).

    Returns:
        The new tokens of each row only, cut after `cfg.eos_id` where a row emitted it.
    """
    check_prompts(family.decoder, prompts, cfg)
    if cfg.max_new_tokens == 0:
        return [[] for _ in prompts]
    was_training = family.training
    family.eval()
    out: list[list[int]] = [[] for _ in prompts]
    device = family.decoder.embed.weight.device
    try:
        for rows in group_by_length(prompts):
            gens = [row_generators(cfg.seed, first_row + r, 1, TOKEN_STREAM)[0] for r in rows]
            tokens = torch.tensor([prompts[r] for r in rows], device=device)  # (G, P)
            z = None if latents is None else latents[rows]  # (G, N, D)
            for r, new in zip(rows, _decode_group(family, tokens, cfg, gens, z, on_step), strict=True):
                out[r] = new
    finally:
        family.train(was_training)
    return out


def _decode_group(family, tokens: torch.Tensor, cfg: SamplingConfig, gens: list[torch.Generator],
                  latents: torch.Tensor | None, on_step) -> list[list[int]]:
    """Decode rows of equal prompt length `tokens` (G, P) together."""
    G, P = tokens.shape
    seq = torch.cat([tokens, tokens.new_zeros(G, cfg.max_new_tokens)], dim=1)  # (G, P + n_new)
    state = None
    if cfg.use_cache:
        logits, state = family.prefill(tokens, P + cfg.max_new_tokens, latents)  # (G, V)
    else:
        logits = family.full_logits(tokens, latents)[:, -1]  # (G, V)

    def advance(t: int, new: torch.Tensor) -> torch.Tensor:
        nonlocal state
        seq[:, P + t] = new
        if cfg.use_cache:
            logits, state = family.decode_step(new, state)  # (G, V)
            return logits
        return family.full_logits(seq[:, :P + t + 1], latents)[:, -1]  # (G, V)

    return sample_loop(logits, advance, cfg, gens, on_step)
