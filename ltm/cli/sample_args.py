"""The flags of `python -m ltm.sample`."""

from __future__ import annotations

import argparse


def build_parser(description: str) -> argparse.ArgumentParser:
    """The sampling CLI's parser."""
    p = argparse.ArgumentParser(prog="python -m ltm.sample", description=description)
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
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose config names its model, prior or guide by a "
                   "module:Class path (importing it runs that code; only for checkpoints you trust)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, 0: one per core (default: 1)")
    return p
