"""Sampling from text to text: a checkpoint's tokenizer and config around `generate`.

    from ltm.sampling import sample_text
    sample_text("runs/ltm-default", "Return the", num_samples=2)
"""

from __future__ import annotations

from pathlib import Path

from ltm.core.errors import ConfigError, DataError
from ltm.data.tokenizer import decode, encode, special_ids
from ltm.sampling.sampler import generate
from ltm.sampling.settings import SamplingConfig
from ltm.training.build import build_run_guide
from ltm.training.checkpoint import load_checkpoint, load_guide, resolve_checkpoint


def generate_text(model, tokenizer, config, prompts: list[str] | None = None, *, num_samples: int = 1,
                  unconditional: bool = False, max_new_tokens: int | None = None,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  seed: int = 0, inner_steps: int | None = None, guide=None) -> list[str]:
    """Continuations (text) of each prompt, `num_samples` each, in prompt-major order.

    Args:
        model, tokenizer, config: As returned by `ltm.training.checkpoint.load_checkpoint`.
        prompts: Prompt texts; None for unconditional samples started from BOS.
        num_samples: Samples per prompt.
        unconditional: Draw z from the prior instead of fitting q(z | prompt).
        max_new_tokens: Most new tokens per sample (default: fill the model's block).
        temperature, top_k, top_p, seed: Decoding settings (see `ltm.sampling.SamplingConfig`).
        inner_steps: Inner steps K of the conditional fit (default: the run's evaluation K).
        guide: The guide to fit (default: a fresh one of the run's kind; see `load_guide`).
    """
    bos, eos, _ = special_ids(tokenizer)
    if not prompts and not unconditional:
        raise ConfigError("give a prompt (--prompt or --prompt-file) or ask for --unconditional samples.")
    ids = [encode(tokenizer, p, bos=True) for p in prompts] if prompts else None
    longest = max(map(len, ids)) if ids else 1
    if max_new_tokens is None:
        max_new_tokens = config.data.block_size - longest
        if max_new_tokens < 1:
            raise DataError(f"the prompt has {longest} tokens (with BOS) but the model's block_size is "
                            f"{config.data.block_size}; shorten the prompt.")
    k = config.eval_steps if inner_steps is None else inner_steps
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, seed=seed, eos_id=eos)
    if guide is None:
        guide = build_run_guide(config, model).to(next(model.parameters()).device)
    rows = generate(model, ids, num_samples=num_samples, unconditional=unconditional, sampling=sampling,
                    inner=config.inner_config(k), guide=guide, bos_id=bos)
    return [decode(tokenizer, r) for r in rows]


def sample_text(checkpoint: str | Path, prompts: str | list[str] | None = None, *, device: str = "cpu",
                trust_code: bool = False, **kwargs) -> list[str]:
    """Load `checkpoint` and sample in one call; `trust_code` as in `load_checkpoint`, the other
    keyword arguments as in `generate_text`."""
    step_dir = resolve_checkpoint(checkpoint)  # once: model and guide come from the same step
    model, tokenizer, config = load_checkpoint(step_dir, device, trust_code)
    prompts = [prompts] if isinstance(prompts, str) else prompts
    guide = load_guide(step_dir, device, model, trust_code)
    return generate_text(model, tokenizer, config, prompts, guide=guide, **kwargs)
