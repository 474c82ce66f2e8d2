"""One sampler for every model family: thoughts (where the family has sequence-level ones), then
the KV-cached decode loop.

For a family with `sequence_latent` (the LTM), z comes from q(z | prompt) fitted with K inner steps,
or from the prior; every family then decodes through its own `prefill` / `decode_step`. All
randomness comes from per-row streams (`ltm.sampling.streams`), so row r of a batch equals a one-row
call with `first_row=r`.
"""

from __future__ import annotations

from ltm.core.errors import ConfigError
from ltm.inference import InnerLoopConfig, LocalGuide
from ltm.sampling.loop import check_prompts, decode
from ltm.sampling.settings import SamplingConfig
from ltm.sampling.thoughts import conditional_latents, prior_latents


def generate(family, prompts: list[list[int]] | None = None, *, num_samples: int = 1,
             unconditional: bool = False, sampling: SamplingConfig | None = None,
             inner: InnerLoopConfig | None = None, guide: LocalGuide | None = None,
             bos_id: int | None = None, first_row: int = 0,
             posterior_mean: bool = False) -> list[list[int]]:
    """Sample continuations from any model family.

    Each prompt is repeated `num_samples` times; rows are in prompt-major order (row
    p * num_samples + s is sample s of prompt p) and row r uses the random streams of row
    first_row + r. For a family with sequence-level thoughts, z comes from q(z | prompt) fitted
    with `inner.steps` steps (one-token prompts: from the prior), or from the prior when
    `unconditional`; other families decode from the prompt alone.

    Args:
        family: A model family (`ltm.models.Family`).
        prompts: Token ids per prompt (ragged allowed). Unconditional default: [[bos_id]].
        num_samples: Samples per prompt.
        unconditional: Draw z from the prior instead of fitting it to the prompt.
        sampling: Decoding settings (default `SamplingConfig()`); its seed drives every draw.
        inner: Inner-loop settings for the conditional fit (default `InnerLoopConfig()`).
        guide: Local guide for the conditional fit (default: the family's default guide).
        bos_id: Start token of unconditional samples when no prompts are given.
        first_row: Row index of the first row (to reproduce one row of a larger request).
        posterior_mean: Decode with the mean of q (or of the prior, for one-token prompts)
            instead of a draw; unconditional rows still draw from the prior.

    Returns:
        The continuation of each row only (prompt excluded), cut after `sampling.eos_id`.
    """
    sampling = sampling if sampling is not None else SamplingConfig()
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}.")
    if prompts is None:
        if not unconditional:
            raise ConfigError("no prompts given: pass prompts, or unconditional=True with a bos_id.")
        if bos_id is None:
            raise ConfigError("unconditional generation without prompts needs bos_id, the token "
                              "every sample starts from.")
        prompts = [[bos_id]]
    rows = [list(p) for p in prompts for _ in range(num_samples)]
    check_prompts(family.decoder, rows, sampling)  # before any (costly) fit
    latents = None
    if family.sequence_latent and unconditional:
        latents = prior_latents(family, len(rows), sampling.seed, first_row=first_row)
    elif family.sequence_latent:
        latents = conditional_latents(family, rows, inner or InnerLoopConfig(), sampling.seed, guide,
                                      first_row=first_row, posterior_mean=posterior_mean)
    return decode(family, rows, sampling, latents, first_row=first_row)
