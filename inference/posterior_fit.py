"""Fitting q(z | x) for evaluation: eval mode in a seeded RNG fork, the fit itself, and draws of z.

Every honest bound (`ltm.inference.bounds`) and every zero-shot score (`ltm.eval`) fits the guide
on some tokens, then scores under `torch.no_grad()` with fresh draws; these are the shared steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import torch
from pyro import poutine

from ltm.core.errors import ConfigError, DataError
from ltm.core.protocols import ModelFamily
from ltm.core.sites import LATENT_SITE
from ltm.inference.elbo import LatentELBO
from ltm.inference.guides.base import LocalGuide, pyro_guide
from ltm.inference.inner_loop import InnerLoopConfig, fit_local


def as_batches(tokens, device: torch.device) -> list[torch.Tensor]:
    """One block tensor (B, T+1) or a list of them, checked and moved to `device`, as a list."""
    batches = [tokens] if isinstance(tokens, torch.Tensor) else list(tokens)
    if not batches:
        raise DataError("no batches to evaluate: give a (B, T+1) tensor or a non-empty list of them.")
    for b in batches:
        if b.dim() != 2 or b.shape[1] < 2:
            raise DataError(f"each batch must be token ids (B, T+1) with T+1 >= 2, got shape "
                            f"{tuple(b.shape)}.")
    return [b.to(device) for b in batches]


def check_prefix(prefix_len: int, block_tokens: int) -> None:
    """Refuse a prefix that leaves no continuation in blocks of `block_tokens` tokens."""
    if not 1 <= prefix_len < block_tokens:
        raise ConfigError(f"prefix_len={prefix_len} leaves nothing to score in blocks of "
                          f"{block_tokens} tokens; the block must be longer than the prefix.")


@contextlib.contextmanager
def evaluation_mode(family: ModelFamily, seed: int):
    """Eval mode and a forked RNG seeded with `seed`; restores both on exit.

    Yields:
        The device of the family's parameters.
    """
    was_training = family.training
    device = next(family.parameters()).device
    family.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield device
    finally:
        family.train(was_training)


def fit_posterior(family: ModelFamily, guide: LocalGuide, tokens: torch.Tensor, inner: InnerLoopConfig,
                  fresh: bool = True) -> None:
    """Fit q on `tokens` (B, T+1) with `inner` and detach it.

    A block of a single token has no next token to fit to, so q stays at its initialisation.

    Args:
        fresh: Drop the fit's noise draw, so that later scoring uses fresh draws (never the one
            the fit was tuned to); False keeps it (the published protocol).
    """
    if tokens.shape[1] < 2:
        inner = replace(inner, steps=0)
    with torch.enable_grad():
        fit_local(family, guide, tokens, inner, LatentELBO())
    guide.detach_locals()
    if fresh:
        guide.fixed_noise = None


def draw_latents(family: ModelFamily, guide: LocalGuide, tokens: torch.Tensor) -> torch.Tensor | None:
    """One draw z ~ q (B, N, D) at the sequence-level site "z", or None for a guide without it."""
    node = poutine.trace(pyro_guide(guide, family.prior)).get_trace(tokens).nodes.get(LATENT_SITE)
    return None if node is None else node["value"]


def predictive_logits(family: ModelFamily, guide: LocalGuide, prefix: torch.Tensor,
                      inputs: torch.Tensor, start: int, num_samples: int) -> Iterator[torch.Tensor]:
    """Next-token logits (B, C, V) of `inputs` at positions >= `start`, one per fresh z ~ q fitted
    on `prefix`: S of them, or one for a family without z (every draw would be the same)."""
    for _ in range(num_samples):
        z = draw_latents(family, guide, prefix)  # (B, N, D) or None
        yield family.full_logits(inputs, z)[:, start:]  # (B, C, V)
        if z is None:
            return
