"""Score held-out text honestly at several inner-step budgets K, each number labelled.

    python -m ltm.evaluate --checkpoint runs/ltm-default --inner-steps 0,4,16 --batches 8 \
        --iwae-samples 8 --prefix-len 64 --out eval.json --plot eval.png
    python -m ltm.evaluate --checkpoint runs/ltm-default --batches 0 --limit 100 \
        --wikitext2 ../shared/data/wikitext2/test.txt --lambada ../shared/data/lambada/lambada_test.jsonl

For each K (see `inference.bounds`): the fresh-noise ELBO bound (reconstruction + KL per token);
the importance-weighted bound with S samples; prefix-predictive NLL (q fitted on the first P
tokens of each block, the rest scored: comparable with an autoregressive model's perplexity); and
the published protocol (same noise for fit and score; optimistic, not a bound), labelled as such.
Deterministic families (empty guide) get their exact NLL under every heading. Zero-shot sets
(`--wikitext2`, `--ptb`, `--lambada`, `--blimp`) are scored by `ltm.zero_shot`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

from inference.bound_results import ELBO_LABEL, IWAE_LABEL, PREFIX_LABEL, PUBLISHED_LABEL
from inference.bounds_curve import bounds_vs_inner_steps, plot_curve
from ltm.checkpoint import load_checkpoint, load_guide, resolve_checkpoint
from ltm.cli_errors import report_user_errors


def fixed_batches(blocks, batch_size: int, num_batches: int) -> list[torch.Tensor]:
    """The first `num_batches` batches of consecutive blocks (a fixed, reproducible subset)."""
    n = len(blocks)
    if n == 0:
        raise ValueError("no blocks to evaluate: the text is shorter than one block (block_size + 1 "
                         "tokens); give more text.")
    starts = range(0, min(n, batch_size * num_batches), batch_size)
    return [blocks.batch(range(s, min(s + batch_size, n))) for s in starts]  # each (B, T+1)


@contextlib.contextmanager
def _quiet_datasets():
    """Silence `datasets` logging and progress bars (a malformed file is reported in one sentence)."""
    import datasets

    level, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 10)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _text_blocks(path: str, tokenizer, config):
    """Blocks of a text file, split into documents and packed exactly as training data is."""
    from ltm.data import TokenBlocks
    from ltm.data.corpus import load_documents
    from ltm.data.prepare import pack
    from ltm.tokenizer import special_ids

    if not Path(path).exists():
        raise FileNotFoundError(f"data file {path} does not exist.")
    with _quiet_datasets():
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


PROTOCOLS = {"fresh_noise_elbo": ELBO_LABEL, "importance_weighted": IWAE_LABEL,
             "prefix_predictive": PREFIX_LABEL, "published_protocol": PUBLISHED_LABEL}
EXACT_NOTE = ("deterministic family (no latent to infer): every heading is its exact NLL per token "
              "(prefix-predictive: of the continuation tokens)")


def build_parser() -> argparse.ArgumentParser:
    from ltm import zero_shot

    p = argparse.ArgumentParser(prog="python -m ltm.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/ltm-default", help="run directory (latest step) or "
                   "step directory (default: runs/ltm-default)")
    p.add_argument("--inner-steps", default="0,4,16", help="comma list of budgets K (default: 0,4,16)")
    p.add_argument("--batches", type=int, default=8, help="batches of held-out blocks to score; 0 skips "
                   "them (e.g. to run zero-shot sets only) (default: 8)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch (default: the run's)")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="split of the run's dataset to score (default: val)")
    p.add_argument("--data", default=None, help="score this text file instead (tokenized with the "
                   "checkpoint's tokenizer)")
    p.add_argument("--iwae-samples", type=int, default=8, help="S, samples of the importance-weighted "
                   "bound and the prefix-predictive mixture (default: 8)")
    p.add_argument("--elbo-draws", type=int, default=1, help="fresh noise draws the ELBO bound is "
                   "averaged over (default: 1, as in training's validation)")
    p.add_argument("--prefix-len", type=int, default=None, help="P, tokens of each block q(z) is fitted "
                   "on for prefix-predictive perplexity (default: half the block)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default: 0)")
    p.add_argument("--out", default=None, help="also write the results as JSON to this file")
    p.add_argument("--plot", default=None, help="also write a PNG of each bound against K to this file")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, 0: one per core (default: 1)")
    zero_shot.add_arguments(p)
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


def check_args(args: argparse.Namespace, block_size: int) -> int:
    """Validate S and P against the checkpoint's block size; returns P (blocks hold T+1 tokens)."""
    if args.iwae_samples < 1:
        raise ValueError(f"--iwae-samples S must be >= 1, got {args.iwae_samples}.")
    if args.elbo_draws < 1:
        raise ValueError(f"--elbo-draws must be >= 1, got {args.elbo_draws}.")
    if args.batches < 0:
        raise ValueError(f"--batches must be >= 0, got {args.batches}.")
    prefix = (block_size + 1) // 2 if args.prefix_len is None else args.prefix_len
    if not 1 <= prefix <= block_size:
        raise ValueError(f"--prefix-len {prefix} leaves no continuation to score in blocks of "
                         f"{block_size + 1} tokens (block_size {block_size} + 1); use 1 <= P <= "
                         f"{block_size}.")
    return prefix


def format_table(curve: list[dict]) -> str:
    """One row per K: fresh-noise ELBO (recon, KL, sum), IWAE, prefix-predictive, published."""
    lines = [f"{'K':>4} {'recon':>8} {'KL':>8} {'-ELBO':>8} {'ppl <=':>9} {'IWAE':>8} {'ppl <=':>9} "
             f"{'prefix':>8} {'ppl':>9} {'publ.*':>8} {'ppl*':>9}"]
    for row in curve:
        e, w, p, pub = (row[k] for k in PROTOCOLS)
        lines.append(f"{row['inner_steps']:>4} {e['reconstruction']:>8.4f} {e['kl']:>8.4f} "
                     f"{e['neg_elbo']:>8.4f} {e['perplexity_bound']:>9.2f} {w['nll_bound']:>8.4f} "
                     f"{w['perplexity_bound']:>9.2f} {p['nll']:>8.4f} {p['perplexity']:>9.2f} "
                     f"{pub['neg_elbo']:>8.4f} {pub['mean_sequence_perplexity']:>9.2f}")
    return "\n".join(lines)


def format_legend(curve: list[dict], exact: bool) -> str:
    first = curve[0]
    lines = [f"  -ELBO: {ELBO_LABEL}",
             f"  IWAE (S={first['importance_weighted']['num_samples']}): {IWAE_LABEL}",
             f"  prefix (P={first['prefix_predictive']['prefix_len']}, "
             f"{first['prefix_predictive']['tokens']} continuation tokens): {PREFIX_LABEL}",
             f"  publ.*: {PUBLISHED_LABEL} (ppl*: mean over sequences of exp per sequence)"]
    if exact:
        lines.append(f"  note: {EXACT_NOTE}")
    return "\n".join(lines)


def _held_out(args, model, guide, tokenizer, config, budgets: list[int], prefix: int) -> dict:
    """The four protocols on held-out blocks at every budget, printed; the JSON-ready report part."""
    from ltm.ponder.builders import DETERMINISTIC_MODELS

    if args.data:
        blocks = _text_blocks(args.data, tokenizer, config)
    else:
        blocks = _split_blocks(args.split, config, tokenizer)
    batches = fixed_batches(blocks, args.batch_size or config.batch_size, args.batches)
    curve = bounds_vs_inner_steps(model, guide, batches, budgets, args.iwae_samples,
                                  config.inner_config(), prefix, args.elbo_draws,
                                  args.seed)
    exact = config.model in DETERMINISTIC_MODELS
    data = args.data or f"{config.dataset} ({args.split})"
    print(f"data {data}, {curve[0]['fresh_noise_elbo']['tokens']} tokens, nats/token:\n"
          f"{format_table(curve)}\n{format_legend(curve, exact)}")
    if args.plot:
        print(f"wrote {plot_curve(curve, args.plot)}")
    return {"data": data, "exact": exact, "note": EXACT_NOTE if exact else None, "results": curve}


def run(args: argparse.Namespace) -> dict:
    from ltm import zero_shot

    budgets = parse_budgets(args.inner_steps)
    step_dir = resolve_checkpoint(args.checkpoint)
    model, tokenizer, config = load_checkpoint(step_dir, args.device)
    prefix = check_args(args, config.block_size)
    sets = zero_shot.requested_sets(args)
    if args.batches == 0 and not sets:
        raise ValueError("nothing to evaluate: --batches 0 and no zero-shot set (--wikitext2, --ptb, "
                         "--lambada, --blimp).")
    guide = load_guide(step_dir, args.device)
    print(f"checkpoint {step_dir} (model {config.model})")
    report = {"checkpoint": str(step_dir), "model": config.model, "seed": args.seed,
              "labels": PROTOCOLS, "results": []}
    if args.batches:
        report.update(_held_out(args, model, guide, tokenizer, config, budgets, prefix))
    if sets:
        report["zero_shot"] = zero_shot.run_sets(model, guide, tokenizer, config, args, budgets)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return report_user_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
