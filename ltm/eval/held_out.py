"""Held-out scoring for `python -m ltm.evaluate`: the blocks, the four protocols at each K, the table.

The protocols (`ltm.inference.bounds`), each labelled in the table and the JSON: the fresh-noise
ELBO bound (reconstruction + KL per token); the importance-weighted bound with S samples;
prefix-predictive NLL (q fitted on the first P tokens of each block, the rest scored: comparable
with an autoregressive model's perplexity); and the published protocol (same noise for fit and
score; optimistic, not a bound). A family whose NLL is exact gets it under every heading.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ltm.data import TokenBlocks, prepare_data
from ltm.data.corpus import load_documents
from ltm.data.prepare import pack
from ltm.data.tokenizer import special_ids
from ltm.eval.curve import bounds_vs_inner_steps, plot_curve
from ltm.inference import InnerLoopConfig
from ltm.inference.bound_results import ELBO_LABEL, IWAE_LABEL, PREFIX_LABEL, PUBLISHED_LABEL

PROTOCOLS = {"fresh_noise_elbo": ELBO_LABEL, "importance_weighted": IWAE_LABEL,
             "prefix_predictive": PREFIX_LABEL, "published_protocol": PUBLISHED_LABEL}
EXACT_NOTE = ("deterministic family (no latent to infer): every heading is its exact NLL per token "
              "(prefix-predictive: of the continuation tokens)")


@contextlib.contextmanager
def _quiet_datasets():
    """Silence `datasets` logging and progress bars (a malformed file is reported in one sentence)."""
    import datasets  # late: it takes a second to import, and only text files need it

    level, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 10)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def text_blocks(path: str, tokenizer, config):
    """Blocks of a text file, split into documents and packed exactly as training data is."""
    if not Path(path).exists():
        raise FileNotFoundError(f"data file {path} does not exist.")
    with _quiet_datasets():
        docs = load_documents(path, config.text_field, Path(config.data_cache_dir()) / "hf")
    bos, eos, _ = special_ids(tokenizer)
    return TokenBlocks(pack(tokenizer, docs, bos, eos, "tokenizing"), config.block_size)


def held_out_blocks(config, tokenizer, data_file: str | None = None, split: str = "val"):
    """The blocks to score: a text file tokenized with the checkpoint's tokenizer, or a split of the
    run's own dataset (prepared again, and checked to give the checkpoint's tokenizer)."""
    if data_file:
        return text_blocks(data_file, tokenizer, config)
    data = prepare_data(config.data_config(), config.data_cache_dir())
    if data.tokenizer.to_str() != tokenizer.to_str():
        raise ValueError(f"the {config.dataset!r} data prepared here has another tokenizer than the "
                         f"checkpoint's (a changed corpus or library version); score a text file with "
                         f"--data instead.")
    return data.train if split == "train" else data.val


def score_held_out(model, guide, batches, budgets: list[int], inner: InnerLoopConfig, *, data: str,
                   num_samples: int = 8, prefix_len: int | None = None, num_draws: int = 1,
                   seed: int = 0, plot: str | None = None) -> dict:
    """The four protocols on held-out batches at every budget K, printed as a table.

    Returns:
        The JSON-ready part of the report: {"data", "exact", "note", "results": curve}.
    """
    curve = bounds_vs_inner_steps(model, guide, batches, budgets, num_samples, inner, prefix_len,
                                  num_draws, seed)
    exact = model.exact_nll
    print(f"data {data}, {curve[0]['fresh_noise_elbo']['tokens']} tokens, nats/token:\n"
          f"{format_table(curve)}\n{format_legend(curve, exact)}")
    if plot:
        print(f"wrote {plot_curve(curve, plot)}")
    return {"data": data, "exact": exact, "note": EXACT_NOTE if exact else None, "results": curve}


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
