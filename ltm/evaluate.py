"""Score held-out text honestly at several inner-step budgets K, each number labelled.

    python -m ltm.evaluate --checkpoint runs/ltm-default --inner-steps 0,4,16 --batches 8 \\
        --iwae-samples 8 --prefix-len 64 --out eval.json --plot eval.png
    python -m ltm.evaluate --checkpoint runs/ltm-default --batches 0 --limit 100 \\
        --wikitext2 ../shared/data/wikitext2/test.txt --lambada ../shared/data/lambada/lambada_test.jsonl

For each K (see `ltm.inference.bounds`): the fresh-noise ELBO bound (reconstruction + KL per token);
the importance-weighted bound with S samples; prefix-predictive NLL (q fitted on the first P
tokens of each block, the rest scored: comparable with an autoregressive model's perplexity); and
the published protocol (same noise for fit and score; optimistic, not a bound), labelled as such.
`--protocols` picks some (default: all that apply to the run's guide: a guide without a tractable
density, such as the MAP point "delta" or "langevin", gets the prefix-predictive NLL only, since the
other three need log q(z); asking for one of them is refused).
Each K also reports the posterior diagnostics (KL per latent vector, active units, mutual
information; `ltm.inference.diagnostics`), and `--long-fit N` the gap of each K to an N-step fit.
Families whose NLL is exact get one heading, their exact NLL, computed once (`ltm.eval.exact`). Zero-shot sets
(`--wikitext2`, `--ptb`, `--lambada`, `--blimp`) are scored by `ltm.eval.zero_shot`. A run trained
on a reasoning task (`--dataset reasoning:...`) is scored on that task's test questions with
`--task run --difficulties 2,4,6` (`ltm.eval.reasoning_tasks`): greedy exact-match accuracy, answer
NLL, tokens and FLOPs per answer, by difficulty.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ltm.cli.errors import report_user_errors
from ltm.cli.evaluate_args import (
    build_parser,
    check_args,
    check_protocols,
    parse_budgets,
    zero_shot_paths,
)
from ltm.core.errors import ConfigError
from ltm.eval.curve import PROTOCOL_KEYS
from ltm.eval.held_out import PROTOCOLS, held_out_blocks, score_held_out
from ltm.eval.reasoning_tasks import score_tasks, task_plan
from ltm.eval.zero_shot import check_sets, run_sets
from ltm.inference.data_parallel import data_parallel
from ltm.training.checkpoint import load_checkpoint, load_guide, read_manifest, resolve_checkpoint
from ltm.training.distributed import init_distributed


def run(args: argparse.Namespace) -> dict:
    """Evaluate the checkpoint as `args` asks; print the tables and return the JSON-ready report.

    Under torchrun each process scores its rows of every held-out batch and the sums are reduced
    (`ltm.inference.data_parallel`): the same numbers as one process; rank 0 prints and writes."""
    dist, device = init_distributed(args.device)
    try:
        with data_parallel(dist), (contextlib.nullcontext() if dist.is_main
                                   else contextlib.redirect_stdout(io.StringIO())):
            report = _run(args, str(device))
    finally:
        dist.close()
    if args.out and dist.is_main:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _run(args: argparse.Namespace, device: str) -> dict:
    budgets = parse_budgets(args.inner_steps)
    step_dir = resolve_checkpoint(args.checkpoint)
    model, tokenizer, config = load_checkpoint(step_dir, device, args.trust_code)
    prefix = check_args(args, config.data.block_size)
    sets = zero_shot_paths(args)
    check_sets(sets, args.limit)
    tasks = task_plan(args, config.data.dataset, config.data.block_size) if args.task else None
    if args.batches == 0 and not sets and not tasks:
        raise ConfigError("nothing to evaluate: --batches 0 and no zero-shot set (--wikitext2, --ptb, "
                          "--lambada, --blimp) or --task.")
    guide = load_guide(step_dir, device, model, args.trust_code)
    protocols = check_protocols(args, guide, sets)
    batch_size = args.batch_size or config.batch_size
    inner = replace(config.inner_config(), **{k: v for k, v in (("optimizer", args.fast_optimizer),
                                                                ("lr", args.fast_lr)) if v is not None})
    print(f"checkpoint {step_dir} (model {config.model})")
    report = {"checkpoint": str(step_dir), "model": config.model, "seed": args.seed,
              "inner_loop": {"optimizer": inner.optimizer, "lr": inner.lr, "schedule": inner.schedule},
              "protocols": protocols,
              "labels": {key: PROTOCOLS[key] for n, key in PROTOCOL_KEYS.items() if n in protocols},
              "results": []}
    if args.batches:
        blocks = held_out_blocks(config, tokenizer, args.data, args.split)
        report.update(score_held_out(
            model, guide, blocks.fixed_batches(batch_size, args.batches), budgets, inner,
            data=args.data or f"{config.data.dataset} ({args.split})", num_samples=args.iwae_samples,
            prefix_len=prefix, num_draws=args.elbo_draws, seed=args.seed, plot=args.plot,
            long_fit=args.long_fit, protocols=protocols))
    if sets:
        report["zero_shot"] = run_sets(model, guide, tokenizer, sets, budgets, inner,
                                       config.data.block_size, num_samples=args.iwae_samples,
                                       limit=args.limit, seed=args.seed, prefix_len=args.prefix_len,
                                       batch_size=batch_size)
    if tasks:
        report["reasoning"] = score_tasks(model, tokenizer, tasks, inner, seed=args.seed,
                                          batch_size=batch_size, step=read_manifest(step_dir)["step"])
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return report_user_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
