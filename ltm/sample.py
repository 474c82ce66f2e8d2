"""Sample text from a trained checkpoint.

    python -m ltm.sample --checkpoint runs/ltm-default --prompt "Return the number of" --num-samples 3
    python -m ltm.sample --checkpoint runs/ltm-default --unconditional --num-samples 4 --seed 1

Conditional (a prompt): fit q(z | prompt) with --inner-steps fast steps, draw z, then decode the
continuation. Unconditional: z from the prior. All rows are decoded as one batch; each row's
randomness comes from its own seeded stream, so the same seed gives the same text, batched or not.
From Python: `ltm.sampling.sample_text("runs/ltm-default", "Return the", num_samples=2)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ltm.cli.errors import report_user_errors
from ltm.cli.sample_args import build_parser
from ltm.core.errors import DataError, MissingFileError
from ltm.sampling import generate_text
from ltm.training.checkpoint import load_checkpoint, load_guide, resolve_checkpoint
from ltm.training.distributed import check_device


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return report_user_errors(lambda: _sample(args))


def _sample(args: argparse.Namespace) -> None:
    prompts = list(args.prompt)
    for path in args.prompt_file:
        if not Path(path).is_file():
            raise MissingFileError(f"prompt file {path} does not exist or is not a file.")
        try:
            prompts.append(Path(path).read_text(encoding="utf-8").rstrip("\n"))
        except UnicodeDecodeError as bad:
            raise DataError(f"prompt file {path} is not valid UTF-8 text (byte "
                            f"{bad.object[bad.start:bad.start + 1]!r} at offset {bad.start}); save it "
                            f"as UTF-8.") from None
    check_device(args.device)
    step_dir = resolve_checkpoint(args.checkpoint)  # once: model and guide come from the same step
    model, tokenizer, config = load_checkpoint(step_dir, args.device, args.trust_code)
    guide = load_guide(step_dir, args.device, model, args.trust_code)
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
