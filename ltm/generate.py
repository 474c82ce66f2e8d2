"""One sampler for every model family: KV-cached decoding, conditional and unconditional thoughts.

`generate` takes a Latent Thought Model (thoughts z drawn from q(z | prompt), fitted with K inner
steps, or from the prior) or a plain `Decoder` (no thoughts), repeats each prompt `num_samples`
times and decodes all rows together. Ragged prompts are left-padded; each row keeps its own
position ids and a mask hides the pad slots. Randomness comes from per-row generators (rule in
`ltm.sampling`), so row r of a batch equals a one-row call with `first_row=r`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch.distributions import Independent, Normal

from inference.guide import LocalGuide
from inference.guides import LocalGaussianGuide, PriorGuide
from inference.inner_loop import InnerLoopConfig, fit_local
from ltm.ponder.decode import decode as decode_family
from ltm.ponder.decode import is_token_level
from ltm.sampling import (
    LATENT_STREAM,
    TOKEN_STREAM,
    SamplingConfig,
    attention_mask,
    check_prompts,
    filter_logits,
    left_pad,
    row_generators,
    row_normals,
    row_seed,
    sample_loop,
)

__all__ = ["SamplingConfig", "filter_logits", "decode", "conditional_latents", "prior_latents",
           "generate", "row_seed"]


@torch.no_grad()
def decode(decoder, prompts: list[list[int]], cfg: SamplingConfig, latents: torch.Tensor | None = None,
           *, first_row: int = 0,
           on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> list[list[int]]:
    """Continue each prompt with up to `cfg.max_new_tokens` tokens.

    Rows are left-padded to the longest prompt and decoded together, each with its own position
    ids; pad slots are masked out of attention. With `cfg.use_cache` the prompt is run once and each
    step feeds one token through a KV cache; without it every step recomputes the whole prefix.
    Both paths give the same tokens.

    Args:
        decoder: A `Decoder` (or anything with its `hidden_states`/`logits`/`new_cache`/`cfg`).
        prompts: Token ids per row; lengths may differ; each holds at least one token.
        cfg: Sampling settings.
        latents: Thoughts (B, N, D) for a decoder with n_latent > 0, one per row; else None.
        first_row: Index of the first row in the request (selects the per-row token streams).
        on_step: Called after each step as on_step(step, logits (B, V), tokens (B,)).

    Returns:
        The new tokens of each row only (the full text is prompt + continuation), cut after
        `cfg.eos_id` where a row emitted it.
    """
    check_prompts(decoder, prompts, cfg)
    B, n_new = len(prompts), cfg.max_new_tokens
    if n_new == 0:
        return [[] for _ in prompts]
    device = decoder.embed.weight.device
    P = max(len(p) for p in prompts)  # longest prompt
    S = P + n_new  # slots: longest prompt + new tokens
    seq, positions, valid = left_pad(prompts, S, device)  # (B, S) each
    cache = decoder.new_cache(B, S) if cfg.use_cache else None
    gens = row_generators(cfg.seed, first_row, B, TOKEN_STREAM)

    def step_logits(start: int, end: int) -> torch.Tensor:
        first = start if cache is not None else 0  # without a cache, recompute from slot 0
        mask = attention_mask(valid[:, :end], first, decoder.cfg.window)  # (B, 1, Tq, end)
        hidden = decoder.hidden_states(seq[:, first:end], latents=latents,
                                       positions=positions[:, first:end], cache=cache,
                                       attn_mask=mask)  # (B, Tq, D)
        return decoder.logits(hidden[:, -1])  # (B, V)

    def advance(t: int, tokens: torch.Tensor) -> torch.Tensor:
        seq[:, P + t] = tokens
        return step_logits(P + t, P + t + 1)  # (B, V)

    return sample_loop(step_logits(0, P), advance, cfg, gens, on_step)


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
def prior_latents(ltm, n: int, seed: int, *, first_row: int = 0) -> torch.Tensor:
    """Thoughts drawn from the prior, one per row.

    Args:
        ltm: A `LatentThoughtModel` (anything with `.prior` and `.decoder`).
        n: Rows.
        seed: Seed of the per-row latent streams.
        first_row: Index of the first row in the request.

    Returns:
        z (n, N, D); row i uses the latent stream of row first_row + i.
    """
    ref = ltm.decoder.embed.weight
    gens = row_generators(seed, first_row, n, LATENT_STREAM)
    eps = row_normals(gens, tuple(ltm.prior.event_shape), ref.device, ref.dtype)  # (n, N, D)
    return _draw(ltm.prior(), eps, _latent_seeds(seed, first_row, list(range(n))))


def conditional_latents(ltm, prompts: list[list[int]], inner: InnerLoopConfig, seed: int,
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
        ltm: A `LatentThoughtModel`.
        prompts: Token ids per row (ragged allowed).
        inner: Inner-loop settings (steps K, lr, optimizer, schedule).
        seed: Seed of the per-row latent streams.
        guide: Local guide to fit, reset here (default: `LocalGaussianGuide()`, or `PriorGuide()`
            for a degenerate prior).
        first_row: Index of the first row in the request.
        posterior_mean: Return the mean of q (and of the prior for one-token prompts) instead
            of a draw.

    Returns:
        z (B, N, D).
    """
    ref = ltm.decoder.embed.weight
    shape = tuple(ltm.prior.event_shape)
    B = len(prompts)
    gens = row_generators(seed, first_row, B, LATENT_STREAM)
    z = torch.empty((B,) + shape, device=ref.device, dtype=ref.dtype)  # (B, N, D)
    if guide is None:
        guide = PriorGuide() if getattr(ltm.prior, "is_degenerate", False) else LocalGaussianGuide()
    fit_cfg = dataclasses.replace(inner, reuse_noise=True, accumulate_decoder_grads=False)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    for length, rows in sorted(groups.items()):
        row_gens = [gens[i] for i in rows]
        seeds = _latent_seeds(seed, first_row, rows)
        index = torch.tensor(rows, device=ref.device)  # (G,)
        if length < 2:
            with torch.no_grad():
                eps = row_normals(row_gens, shape, ref.device, ref.dtype)  # (G, N, D)
                z[index] = _draw(ltm.prior(), eps, seeds, posterior_mean)
            continue
        tokens = torch.tensor([prompts[i] for i in rows], device=ref.device)  # (G, L)
        noise = row_normals(row_gens, shape, ref.device, ref.dtype)  # (G, N, D)
        with torch.enable_grad():
            fit_local(ltm.model, guide, ltm.prior, tokens, fit_cfg, noise=noise)
        with torch.no_grad():
            eps = row_normals(row_gens, shape, ref.device, ref.dtype)  # (G, N, D)
            z[index] = _draw(guide.distribution(), eps, seeds, posterior_mean)
    return z


def _has_latents(model) -> bool:
    return hasattr(model, "prior") and hasattr(model, "decoder") and hasattr(model, "model")


def generate(model, prompts: list[list[int]] | None = None, *, num_samples: int = 1,
             unconditional: bool = False, sampling: SamplingConfig | None = None,
             inner: InnerLoopConfig | None = None, guide: LocalGuide | None = None,
             bos_id: int | None = None, first_row: int = 0,
             posterior_mean: bool = False) -> list[list[int]]:
    """Sample continuations from any model family.

    Each prompt is repeated `num_samples` times; rows are in prompt-major order (row
    p * num_samples + s is sample s of prompt p) and row r uses the random streams of row
    first_row + r. For a `LatentThoughtModel`, z comes from q(z | prompt) fitted with
    `inner.steps` steps (one-token prompts: from the prior), or from the prior when
    `unconditional`. A plain `Decoder` decodes without thoughts. A token-level family
    (`ltm.ponder`: its thoughts are deterministic) decodes through its own prefill/decode_step.

    Args:
        model: A `LatentThoughtModel`, a `Decoder` with n_latent == 0, or a token-level family.
        prompts: Token ids per prompt (ragged allowed). Unconditional default: [[bos_id]].
        num_samples: Samples per prompt.
        unconditional: Draw z from the prior instead of fitting it to the prompt.
        sampling: Decoding settings (default `SamplingConfig()`); its seed drives every draw.
        inner: Inner-loop settings for the conditional fit (default `InnerLoopConfig()`).
        guide: Local guide for the conditional fit (default `LocalGaussianGuide()`).
        bos_id: Start token of unconditional samples when no prompts are given.
        first_row: Row index of the first row (to reproduce one row of a larger request).
        posterior_mean: Decode with the mean of q (or of the prior, for one-token prompts)
            instead of a draw; unconditional rows still draw from the prior.

    Returns:
        The continuation of each row only (prompt excluded), cut after `sampling.eos_id`.
    """
    sampling = sampling if sampling is not None else SamplingConfig()
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    latent = _has_latents(model)
    decoder = model.decoder if latent else model
    if not latent and decoder.cfg.n_latent > 0:
        raise ValueError("this decoder cross-attends to latent thoughts (n_latent > 0); pass the "
                         "LatentThoughtModel(decoder, prior) so that z can be drawn.")
    if prompts is None:
        if not unconditional:
            raise ValueError("no prompts given: pass prompts, or unconditional=True with a bos_id.")
        if bos_id is None:
            raise ValueError("unconditional generation without prompts needs bos_id, the token "
                             "every sample starts from.")
        prompts = [[bos_id]]
    rows = [list(p) for p in prompts for _ in range(num_samples)]
    check_prompts(decoder, rows, sampling)  # before any (costly) fit
    if is_token_level(model):  # ltm.ponder families: no sequence-level z to fit or draw
        return decode_family(model, rows, sampling, first_row=first_row)
    latents = None
    if latent and unconditional:
        latents = prior_latents(model, len(rows), sampling.seed, first_row=first_row)
    elif latent:
        latents = conditional_latents(model, rows, inner or InnerLoopConfig(), sampling.seed, guide,
                                      first_row=first_row, posterior_mean=posterior_mean)
    return decode(decoder, rows, sampling, latents, first_row=first_row)
