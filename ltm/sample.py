"""Sample text from a trained checkpoint.

    python -m ltm.sample --checkpoint runs/ltm-default --prompt "Return the number of" --num-samples 3
    python -m ltm.sample --checkpoint runs/ltm-default --unconditional --num-samples 4 --seed 1

Conditional (a prompt): fit q(z | prompt) with --inner-steps fast steps, draw z, then decode the
continuation. Unconditional: z from the prior. All rows are decoded as one batch; each row's
randomness comes from its own seeded stream, so the same seed gives the same text, batched or not.
From Python: `sample_text("runs/ltm-default", "Return the", num_samples=2)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ltm.checkpoint import load_checkpoint, load_guide
from ltm.cli_errors import report_user_errors
from ltm.families import build_run_guide
from ltm.generate import generate
from ltm.sampling import SamplingConfig
from ltm.tokenizer import decode, encode, special_ids


def generate_text(model, tokenizer, config, prompts: list[str] | None = None, *, num_samples: int = 1,
                  unconditional: bool = False, max_new_tokens: int | None = None,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  seed: int = 0, inner_steps: int | None = None, guide=None) -> list[str]:
    """Continuations (text) of each prompt, `num_samples` each, in prompt-major order.

    Args:
        model, tokenizer, config: As returned by `ltm.checkpoint.load_checkpoint`.
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
        raise ValueError("give a prompt (--prompt or --prompt-file) or ask for --unconditional samples.")
    ids = [encode(tokenizer, p, bos=True) for p in prompts] if prompts else None
    longest = max(map(len, ids)) if ids else 1
    if max_new_tokens is None:
        max_new_tokens = config.block_size - longest
        if max_new_tokens < 1:
            raise ValueError(f"the prompt has {longest} tokens (with BOS) but the model's block_size is "
                             f"{config.block_size}; shorten the prompt.")
    k = config.eval_steps if inner_steps is None else inner_steps
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, seed=seed, eos_id=eos)
    if guide is None:
        guide = build_run_guide(config).to(next(model.parameters()).device)
    rows = generate(model, ids, num_samples=num_samples, unconditional=unconditional, sampling=sampling,
                    inner=config.inner_config(k), guide=guide, bos_id=bos)
    return [decode(tokenizer, r) for r in rows]


def sample_text(checkpoint: str | Path, prompts: str | list[str] | None = None, **kwargs) -> list[str]:
    """Load `checkpoint` and sample in one call; keyword arguments as in `generate_text`."""
    device = kwargs.pop("device", "cpu")
    model, tokenizer, config = load_checkpoint(checkpoint, device)
    prompts = [prompts] if isinstance(prompts, str) else prompts
    return generate_text(model, tokenizer, config, prompts, guide=load_guide(checkpoint, device), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltm.sample", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/ltm-default",
                   help="run directory (its latest step) or step directory (default: runs/ltm-default)")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for several)")
    p.add_argument("--prompt-file", action="append", default=[], help="file whose text is one prompt")
    p.add_argument("--unconditional", action="store_true", help="draw z from the prior, not q(z|prompt)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (default: 1)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: fill the model's block")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (default: 0)")
    p.add_argument("--inner-steps", type=int, default=None,
                   help="inner steps K fitting q(z|prompt) (default: the run's)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, 0: one per core (default: 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return report_user_errors(lambda: _sample(args))


def _sample(args: argparse.Namespace) -> None:
    prompts = list(args.prompt)
    for path in args.prompt_file:
        if not Path(path).is_file():
            raise FileNotFoundError(f"prompt file {path} does not exist.")
        prompts.append(Path(path).read_text().rstrip("\n"))
    model, tokenizer, config = load_checkpoint(args.checkpoint, args.device)
    guide = load_guide(args.checkpoint, args.device)
    texts = generate_text(model, tokenizer, config, prompts or None, guide=guide,
                          num_samples=args.num_samples,
                          unconditional=args.unconditional, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          seed=args.seed, inner_steps=args.inner_steps)
    for i, text in enumerate(texts):
        prompt = prompts[i // args.num_samples] if prompts else ""
        print(f"=== sample {i + 1}/{len(texts)} ===\n{prompt}{text}\n")


if __name__ == "__main__":
    sys.exit(main())
