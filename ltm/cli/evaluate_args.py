"""The flags of `python -m ltm.evaluate`, and their checks against the checkpoint."""

from __future__ import annotations

import argparse
import math

from ltm.core.errors import ConfigError
from ltm.eval.curve import NEEDS_DENSITY, PROTOCOL_KEYS, default_protocols
from ltm.eval.held_out import TITLES, check_long_fit
from ltm.eval.zero_shot import SETS
from ltm.inference.bounds import default_prefix_len, density_refusal

# zero-shot sets scored (also) by the fresh-noise ELBO or the importance-weighted bound
DENSITY_SETS = {"wikitext2": "fresh-noise ELBO", "ptb": "fresh-noise ELBO",
                "blimp": "importance-weighted bound"}


def build_parser(description: str) -> argparse.ArgumentParser:
    """The evaluation CLI's parser: held-out scoring and the zero-shot sets."""
    p = argparse.ArgumentParser(prog="python -m ltm.evaluate", description=description)
    p.add_argument("--checkpoint", default="runs/ltm-default", help="run directory (latest step) or "
                   "step directory (default: runs/ltm-default)")
    p.add_argument("--inner-steps", default="0,4,16", help="comma list of budgets K (default: 0,4,16)")
    p.add_argument("--batches", type=int, default=None, help="batches of held-out blocks to score; 0 skips "
                   "them (e.g. to run zero-shot sets only) (default: 8, or 0 with --task)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch (default: the run's)")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="split of the run's dataset to score (default: val)")
    p.add_argument("--data", default=None, help="score this text file instead (tokenized with the "
                   "checkpoint's tokenizer)")
    p.add_argument("--protocols", default=None, help="comma list of elbo, iwae, prefix, published "
                   "(default: all that apply to the run's guide; only prefix for a guide without a "
                   "density, e.g. delta or langevin)")
    p.add_argument("--iwae-samples", type=int, default=8, help="S, samples of the importance-weighted "
                   "bound and the prefix-predictive mixture (default: 8)")
    p.add_argument("--elbo-draws", type=int, default=1, help="fresh noise draws the ELBO bound is "
                   "averaged over (default: 1, as in training's validation)")
    p.add_argument("--prefix-len", type=int, default=None, help="P, tokens of each block q(z) is fitted "
                   "on for prefix-predictive perplexity (default: half the block)")
    p.add_argument("--fast-optimizer", default=None, choices=("adam", "adamw", "sgd", "natgrad"),
                   help="fit held-out q with this fast optimiser instead of the run's own (any q "
                   "gives a valid bound) (default: the run's)")
    p.add_argument("--fast-lr", type=float, default=None, help="fit held-out q with this fast "
                   "learning rate instead of the run's own (default: the run's)")
    p.add_argument("--long-fit", type=int, default=None, help="also fit q with this many inner steps "
                   "(e.g. 200) and report each K's gap to it: how far the K-step fit stops from its "
                   "own best (default: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default: 0)")
    p.add_argument("--out", default=None, help="also write the results as JSON to this file")
    p.add_argument("--plot", default=None, help="also write a PNG of each bound against K to this file")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose config names its model, prior or guide by a "
                   "module:Class path (importing it runs that code; only for checkpoints you trust)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, 0: one per core (default: 1)")
    group = p.add_argument_group("zero-shot sets (local files; see ltm.eval.zero_shot)")
    group.add_argument("--wikitext2", default=None, help="WikiText-2 wiki.*.tokens file (e.g. test.txt)")
    group.add_argument("--ptb", default=None, help="PTB ptb.*.txt file")
    group.add_argument("--lambada", default=None, help="LAMBADA lambada_test.jsonl")
    group.add_argument("--blimp", default=None, help="BLiMP <paradigm>.jsonl(.gz) file or folder")
    group.add_argument("--limit", type=int, default=None, help="at most N examples per set (blocks for "
                       "WikiText-2/PTB, passages for LAMBADA, pairs per paradigm for BLiMP)")
    group = p.add_argument_group("reasoning tasks (runs trained on --dataset reasoning:...; see "
                                 "ltm.data.reasoning)")
    group.add_argument("--task", default=None, help="score greedy answers to this task's test questions: a "
                       "task name (addition, multiplication, reachability, swaps, parity) or 'run' for the "
                       "run's own task")
    group.add_argument("--difficulties", default=None, help="comma list of the task's difficulty knob "
                       "(default: the run's)")
    group.add_argument("--task-examples", type=int, default=200, help="test questions per difficulty "
                       "(default: 200)")
    return p


def zero_shot_paths(args: argparse.Namespace) -> dict[str, str]:
    """{set: path} of the zero-shot sets named on the command line."""
    return {name: getattr(args, name) for name in SETS if getattr(args, name, None)}


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--inner-steps must be a comma list of integers like 0,4,16, "
                          f"got '{text}'.") from None
    if not budgets or min(budgets) < 0:
        raise ConfigError(f"--inner-steps needs budgets K >= 0, got '{text}'.")
    return budgets


def check_args(args: argparse.Namespace, block_size: int) -> int:
    """Validate S and P against the checkpoint's block size; returns P (blocks hold T+1 tokens)."""
    if args.iwae_samples < 1:
        raise ConfigError(f"--iwae-samples S must be >= 1, got {args.iwae_samples}.")
    if args.elbo_draws < 1:
        raise ConfigError(f"--elbo-draws must be >= 1, got {args.elbo_draws}.")
    if args.long_fit is not None and args.long_fit < 1:
        raise ConfigError(f"--long-fit must be >= 1 inner steps, got {args.long_fit}.")
    if args.batches is None:
        args.batches = 0 if args.task else 8
    if args.batches < 0:
        raise ConfigError(f"--batches must be >= 0, got {args.batches}.")
    if args.fast_lr is not None and not (math.isfinite(args.fast_lr) and args.fast_lr > 0):
        raise ConfigError(f"--fast-lr must be a finite number > 0, got {args.fast_lr}.")
    prefix = default_prefix_len(block_size + 1) if args.prefix_len is None else args.prefix_len
    if not 1 <= prefix <= block_size:
        raise ConfigError(f"--prefix-len {prefix} leaves no continuation to score in blocks of "
                          f"{block_size + 1} tokens (block_size {block_size} + 1); use 1 <= P <= "
                          f"{block_size}.")
    return prefix


def check_protocols(args: argparse.Namespace, guide, sets: dict[str, str]) -> list[str]:
    """The protocols to score (`--protocols`, default: all that apply to `guide`), refusing any that
    needs log q(z), `--long-fit` and the zero-shot sets scored by a bound, for a guide without a
    tractable density; and `--long-fit` without the ELBO."""
    if args.protocols is None:
        names = default_protocols(guide)
    else:
        asked = [n.strip() for n in args.protocols.split(",") if n.strip()]
        unknown = [n for n in asked if n not in PROTOCOL_KEYS]
        if unknown or not asked:
            raise ConfigError(f"--protocols takes a comma list of {', '.join(PROTOCOL_KEYS)}, got "
                              f"'{args.protocols}'.")
        names = [n for n in PROTOCOL_KEYS if n in asked]
    name = type(guide).__name__
    if not guide.has_density:
        needing = [n for n in NEEDS_DENSITY if n in names]
        if needing:
            raise ConfigError(f"--protocols {needing[0]}: " + density_refusal(
                name, TITLES[needing[0]], "use --protocols prefix (the prefix-predictive NLL) instead"))
        if args.long_fit is not None:
            raise ConfigError("--long-fit: " + density_refusal(
                name, "gap to a long fit (in fresh-noise ELBOs)", "drop --long-fit"))
        bounded = [s for s in DENSITY_SETS if s in sets]
        if bounded:
            s = bounded[0]
            raise ConfigError(f"--{s}: " + density_refusal(
                name, f"{s} score (it includes the {DENSITY_SETS[s]})",
                "score held-out text with --batches or --data (prefix-predictive), or use --lambada"))
    check_long_fit(args.long_fit, names)
    return names
