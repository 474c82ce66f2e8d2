"""The thoughts a sequence-level family decodes with: drawn from q(z | prompt) or from the prior.

Row r of a request takes every draw from its own latent stream (`ltm.sampling.streams`): first the
noise of the inner loop's fit, then the noise of the final draw of z. So a row's thoughts do not
depend on the other rows of its batch.
"""

from __future__ import annotations

import dataclasses

import pyro.distributions as dist
import torch
from torch.distributions import Independent, Normal

from ltm.inference import InnerLoopConfig, LocalGuide, PriorGuide, build_guide, fit_local
from ltm.sampling.loop import group_by_length
from ltm.sampling.streams import LATENT_STREAM, row_generators, row_normals, row_seed


def _draw(q, eps: torch.Tensor, seeds: list[int], mean: bool = False) -> torch.Tensor:
    """Draw z (B, N, D) from q (batch shape (B,) or ()) with per-row noise eps (B, N, D).

    Normal: loc + scale * eps (or loc). Delta: its point. Other distributions: each row sampled
    with the global RNG seeded from its row seed inside `fork_rng` (the caller's RNG is untouched).
    """
    base = q
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, dist.Delta):
        return base.v.expand_as(eps).clone()
    if isinstance(base, Normal):
        return (base.loc + (0.0 if mean else base.scale * eps)).expand_as(eps).clone()  # (B, N, D)
    if mean:
        return q.mean.expand_as(eps).clone()
    rows = []
    devices = [eps.device] if eps.device.type == "cuda" else []
    for i, s in enumerate(seeds):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s)
            draw = q.sample()  # (B, N, D) or (N, D)
        rows.append(draw[i] if draw.dim() == eps.dim() else draw)
    return torch.stack(rows).to(eps)  # (B, N, D)


def _latent_seeds(seed: int, first_row: int, rows: list[int]) -> list[int]:
    return [row_seed(seed, first_row + r, LATENT_STREAM) for r in rows]


@torch.no_grad()
def prior_latents(family, n: int, seed: int, *, first_row: int = 0) -> torch.Tensor:
    """Thoughts drawn from the prior, one per row.

    Args:
        family: A family with sequence-level thoughts (`sequence_latent`), e.g. a `LatentThoughtModel`.
        n: Rows.
        seed: Seed of the per-row latent streams.
        first_row: Index of the first row in the request.

    Returns:
        z (n, N, D); row i uses the latent stream of row first_row + i.
    """
    ref = family.decoder.embed.weight
    gens = row_generators(seed, first_row, n, LATENT_STREAM)
    eps = row_normals(gens, tuple(family.prior.event_shape), ref.device, ref.dtype)  # (n, N, D)
    return _draw(family.prior(), eps, _latent_seeds(seed, first_row, list(range(n))))


def conditional_latents(family, prompts: list[list[int]], inner: InnerLoopConfig, seed: int,
                        guide: LocalGuide | None = None, *, first_row: int = 0,
                        posterior_mean: bool = False) -> torch.Tensor:
    """Fit q(z | prompt) with `inner.steps` fast steps per row, then draw z from q.

    Prompts of equal length are fitted together (the Pyro model needs a rectangular batch); rows
    never interact, so a row's z does not depend on its batch. The fit always reuses one noise
    draw per row for all K steps (`reuse_noise=True`; fresh per-step noise would come from the
    global RNG) and never accumulates decoder gradients. Row r's latent stream gives first the fit
    noise (N, D), then the noise eps' of the final draw z = loc + scale * eps'.

    A prompt of a single token has no next token to condition on: that row falls back to the
    prior and equals `prior_latents` for the same row.

    Args:
        family: A family with sequence-level thoughts (`sequence_latent`), e.g. a `LatentThoughtModel`.
        prompts: Token ids per row (ragged allowed).
        inner: Inner-loop settings (steps K, lr, optimizer, schedule).
        seed: Seed of the per-row latent streams.
        guide: Local guide to fit, reset here (default: the family's default guide, or
            `PriorGuide()` for a degenerate prior).
        first_row: Index of the first row in the request.
        posterior_mean: Return the mean of q (and of the prior for one-token prompts) instead
            of a draw.

    Returns:
        z (B, N, D).
    """
    ref = family.decoder.embed.weight
    shape = tuple(family.prior.event_shape)
    B = len(prompts)
    gens = row_generators(seed, first_row, B, LATENT_STREAM)
    z = torch.empty((B,) + shape, device=ref.device, dtype=ref.dtype)  # (B, N, D)
    if guide is None:
        guide = PriorGuide() if family.prior.is_degenerate else build_guide(family.default_guide)
    fit_cfg = dataclasses.replace(inner, reuse_noise=True, accumulate_decoder_grads=False)
    for rows in group_by_length(prompts):
        length = len(prompts[rows[0]])
        row_gens = [gens[i] for i in rows]
        seeds = _latent_seeds(seed, first_row, rows)
        index = torch.tensor(rows, device=ref.device)  # (G,)
        if length < 2:
            with torch.no_grad():
                eps = row_normals(row_gens, shape, ref.device, ref.dtype)  # (G, N, D)
                z[index] = _draw(family.prior(), eps, seeds, posterior_mean)
            continue
        tokens = torch.tensor([prompts[i] for i in rows], device=ref.device)  # (G, L)
        noise = row_normals(row_gens, shape, ref.device, ref.dtype)  # (G, N, D)
        with torch.enable_grad():
            fit_local(family, guide, tokens, fit_cfg, noise=noise)
        with torch.no_grad():
            eps = row_normals(row_gens, shape, ref.device, ref.dtype)  # (G, N, D)
            z[index] = _draw(guide.distribution(tokens, family.prior), eps, seeds, posterior_mean)
    return z
