"""Score held-out text with the ELBO bound at several inner-step budgets K.

    python -m ltm.evaluate --checkpoint runs/ltm-default --inner-steps 0,4,16 --batches 8

For each K: fit q(z | x) with K inner steps on each batch, then draw FRESH noise and compute the
ELBO, split per token into reconstruction NLL and KL. -ELBO is an upper bound on -log p(x) (its
estimate from one fresh draw is unbiased), so exp(-ELBO per token) is an upper bound on the
perplexity: a bound, not the perplexity, and not comparable with an autoregressive model's
perplexity (q is fitted on the very text being scored).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from inference import InnerLoopConfig, LatentELBO, fit_local
from ltm.checkpoint import CheckpointError, load_checkpoint, load_guide, resolve_checkpoint

BOUND_LABEL = ("fresh-noise ELBO bound after fitting q(z|x) with K inner steps on the scored text: "
               "-ELBO >= NLL, so the perplexity shown is an upper bound, not a perplexity")


@dataclass
class Bound:
    """The ELBO bound at one budget, per token (nats)."""

    inner_steps: int
    reconstruction: float  # -E_q[log p(x|z)] per token
    kl: float  # KL(q || p) per token
    tokens: int

    @property
    def neg_elbo(self) -> float:
        return self.reconstruction + self.kl

    @property
    def perplexity_bound(self) -> float:
        return math.exp(min(self.neg_elbo, 700.0))

    def to_dict(self) -> dict:
        return {**asdict(self), "neg_elbo": self.neg_elbo, "perplexity_bound": self.perplexity_bound}


def elbo_bound(ltm, guide, batches: list[torch.Tensor], inner: InnerLoopConfig, seed: int = 0) -> Bound:
    """The fresh-noise ELBO of `batches` (each (B, T+1)) after fitting q with `inner.steps` steps.

    Runs inside `torch.random.fork_rng` seeded with `seed`, so the caller's RNG stream (e.g. a
    training run's) is left exactly as it was.
    """
    elbo, recon, kl, n_tokens = LatentELBO(), 0.0, 0.0, 0
    was_training = ltm.training
    ltm.eval()
    device = next(ltm.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for tokens in batches:
            tokens = tokens.to(device)  # (B, T+1)
            fit_local(ltm.model, guide, ltm.prior, tokens, inner, elbo)
            guide.detach_locals()
            guide.fixed_noise = None  # score with a fresh draw, never the one the fit was tuned to
            with torch.no_grad():
                terms = elbo.terms(ltm.model, guide, tokens)  # per sequence (B,)
            recon -= terms.reconstruction.sum().item()
            kl += terms.kl.sum().item()
            n_tokens += tokens[:, 1:].numel()
    ltm.train(was_training)
    return Bound(inner.steps, recon / n_tokens, kl / n_tokens, n_tokens)


def fixed_batches(blocks, batch_size: int, num_batches: int) -> list[torch.Tensor]:
    """The first `num_batches` batches of consecutive blocks (a fixed, reproducible subset)."""
    n = len(blocks)
    if n == 0:
        raise ValueError("no blocks to evaluate: the text is shorter than one block (block_size + 1 "
                         "tokens); give more text.")
    starts = range(0, min(n, batch_size * num_batches), batch_size)
    return [blocks.batch(range(s, min(s + batch_size, n))) for s in starts]  # each (B, T+1)


def _text_blocks(path: str, tokenizer, config):
    """Blocks of a text file, split into documents and packed exactly as training data is."""
    from ltm.data import TokenBlocks
    from ltm.data.corpus import load_documents
    from ltm.data.prepare import pack
    from ltm.tokenizer import special_ids

    if not Path(path).exists():
        raise FileNotFoundError(f"data file {path} does not exist.")
    docs = load_documents(path, config.text_field, Path(config.data_cache_dir()) / "hf")
    bos, eos, _ = special_ids(tokenizer)
    return TokenBlocks(pack(tokenizer, docs, bos, eos, "tokenizing"), config.block_size)


def _split_blocks(split: str, config, tokenizer):
    from ltm.data import prepare_data

    data = prepare_data(config.data_config(), config.data_cache_dir())
    if data.tokenizer.to_str() != tokenizer.to_str():
        raise ValueError(f"the {config.dataset!r} data prepared here has another tokenizer than the "
                         f"checkpoint's (a changed corpus or library version); score a text file with "
                         f"--data instead.")
    return data.train if split == "train" else data.val


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltm.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/ltm-default", help="run directory (latest step) or "
                   "step directory (default: runs/ltm-default)")
    p.add_argument("--inner-steps", default="0,4,16", help="comma list of budgets K (default: 0,4,16)")
    p.add_argument("--batches", type=int, default=8, help="batches to score (default: 8)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch (default: the run's)")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="split of the run's dataset to score (default: val)")
    p.add_argument("--data", default=None, help="score this text file instead (tokenized with the "
                   "checkpoint's tokenizer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default: 0)")
    p.add_argument("--out", default=None, help="also write the results as JSON to this file")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, 0: one per core (default: 1)")
    return p


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--inner-steps must be a comma list of integers like 0,4,16, "
                         f"got '{text}'.") from None
    if not budgets or min(budgets) < 0:
        raise ValueError(f"--inner-steps needs budgets K >= 0, got '{text}'.")
    return budgets


def format_table(results: list[Bound]) -> str:
    lines = [f"{'K':>4} {'recon NLL':>10} {'KL':>8} {'-ELBO':>8} {'ppl bound':>10} {'tokens':>8}"]
    for r in results:
        lines.append(f"{r.inner_steps:>4} {r.reconstruction:>10.4f} {r.kl:>8.4f} {r.neg_elbo:>8.4f} "
                     f"{r.perplexity_bound:>10.2f} {r.tokens:>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    budgets = parse_budgets(args.inner_steps)
    step_dir = resolve_checkpoint(args.checkpoint)
    model, tokenizer, config = load_checkpoint(step_dir, args.device)
    if args.data:
        blocks = _text_blocks(args.data, tokenizer, config)
    else:
        blocks = _split_blocks(args.split, config, tokenizer)
    batches = fixed_batches(blocks, args.batch_size or config.batch_size, args.batches)
    guide = load_guide(step_dir, args.device)
    results = [elbo_bound(model, guide, batches, config.inner_config(k), args.seed) for k in budgets]
    report = {"checkpoint": str(step_dir), "data": args.data or f"{config.dataset} ({args.split})",
              "seed": args.seed, "label": BOUND_LABEL, "results": [r.to_dict() for r in results]}
    print(f"checkpoint {step_dir}, data {report['data']}, {results[0].tokens} tokens\n"
          f"{BOUND_LABEL} (nats/token):\n{format_table(results)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (CheckpointError, ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
