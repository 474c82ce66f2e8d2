"""One decode loop for every token-level family, over its prefill / decode_step / full_logits.

Reuses `ltm.sampling` (prompt checks, temperature, top-k, top-p, per-row generators and the seed
rule of `ltm.generate`): row i of a request draws from the token stream of row first_row + i, one
uniform per step, so a row's output does not depend on the other rows of its batch. Prompts are
grouped by length and each group decoded as one batch (no padding, so the thoughts and pause
slots of a row never meet another row's padding); a batched request therefore equals one-row
requests with `first_row` set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ltm.sampling import (
    TOKEN_STREAM,
    SamplingConfig,
    check_prompts,
    row_generators,
    sample_loop,
)


def is_token_level(model) -> bool:
    """True for a family that `decode` can drive (has prefill, decode_step and full_logits)."""
    return all(hasattr(model, name) for name in ("prefill", "decode_step", "full_logits"))


@torch.no_grad()
def decode(family, prompts: list[list[int]], cfg: SamplingConfig, *, first_row: int = 0,
           on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> list[list[int]]:
    """Continue each prompt with up to `cfg.max_new_tokens` tokens.

    With `cfg.use_cache` the prompt is prefilled once and each step costs one `decode_step`;
    without it every step recomputes `full_logits` of the whole prefix. Both give the same tokens.

    Args:
        family: A token-level family (see `ltm.ponder.family.TokenLevelFamily`).
        prompts: Token ids per row; lengths may differ; each holds at least one token.
        cfg: Sampling settings.
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
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    device = family.decoder.embed.weight.device
    try:
        for _, rows in sorted(groups.items()):
            gens = [row_generators(cfg.seed, first_row + r, 1, TOKEN_STREAM)[0] for r in rows]
            tokens = torch.tensor([prompts[r] for r in rows], device=device)  # (G, P)
            for r, new in zip(rows, _decode_group(family, tokens, cfg, gens, on_step), strict=True):
                out[r] = new
    finally:
        family.train(was_training)
    return out


def _decode_group(family, tokens: torch.Tensor, cfg: SamplingConfig, gens: list[torch.Generator],
                  on_step) -> list[list[int]]:
    """Decode rows of equal prompt length `tokens` (G, P) together."""
    G, P = tokens.shape
    n_new = cfg.max_new_tokens
    seq = torch.cat([tokens, tokens.new_zeros(G, n_new)], dim=1)  # (G, P + n_new)
    state = None
    if cfg.use_cache:
        logits, state = family.prefill(tokens, P + n_new)  # (G, V)
    else:
        logits = family.full_logits(tokens)[:, -1]  # (G, V)

    def advance(t: int, new: torch.Tensor) -> torch.Tensor:
        nonlocal state
        seq[:, P + t] = new
        if cfg.use_cache:
            logits, state = family.decode_step(new, state)  # (G, V)
            return logits
        return family.full_logits(seq[:, :P + t + 1])[:, -1]  # (G, V)

    return sample_loop(logits, advance, cfg, gens, on_step)
