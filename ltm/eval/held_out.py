"""Held-out scoring for `python -m ltm.evaluate`: the blocks, the four protocols at each K, the table.

The protocols (`ltm.inference.bounds`), each labelled in the table and the JSON: the fresh-noise
ELBO bound (reconstruction + KL per token); the importance-weighted bound with S samples;
prefix-predictive NLL (q fitted on the first P tokens of each block, the rest scored: comparable
with an autoregressive model's perplexity); and the published protocol (same noise for fit and
score; optimistic, not a bound). A family whose NLL is exact gets one heading, its exact NLL.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from ltm.data import TokenBlocks, prepare_data
from ltm.data.corpus import load_documents
from ltm.data.prepare import pack
from ltm.data.tokenizer import special_ids
from ltm.eval.curve import bounds_vs_inner_steps, plot_curve
from ltm.eval.exact import exact_scores, format_exact
from ltm.inference import InnerLoopConfig
from ltm.inference.bound_results import ELBO_LABEL, IWAE_LABEL, PREFIX_LABEL, PUBLISHED_LABEL
from ltm.inference.bounds import default_prefix_len, fresh_noise_elbo

PROTOCOLS = {"fresh_noise_elbo": ELBO_LABEL, "importance_weighted": IWAE_LABEL,
             "prefix_predictive": PREFIX_LABEL, "published_protocol": PUBLISHED_LABEL}
EXACT_NOTE = ("deterministic family (no latent to infer): one heading, its exact NLL per token "
              "(and that of the continuation after the prefix), computed once per batch")


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
                   seed: int = 0, plot: str | None = None, long_fit: int | None = None) -> dict:
    """The four protocols on held-out batches at every budget K, printed as a table, with the
    posterior diagnostics at each K and the gap to a long fit; for a deterministic family, its
    exact NLL once (`ltm.eval.exact`).

    Returns:
        The JSON-ready part of the report: {"data", "exact", "note", "results": curve} (and
        "long_fit"), or for a deterministic family {"data", "exact", "exact_nll", "results": []}.
    """
    prefix_len = prefix_len or default_prefix_len(batches[0].shape[1])
    if model.exact_nll:
        scores = exact_scores(model, batches, prefix_len, seed)
        print(f"data {data}:\n{format_exact(scores)}")
        return {"data": data, "exact": True, "note": EXACT_NOTE, "exact_nll": scores, "results": []}
    curve = bounds_vs_inner_steps(model, guide, batches, budgets, num_samples, inner, prefix_len,
                                  num_draws, seed, diagnostics=True)
    report = {"data": data, "exact": False, "note": None, "results": curve}
    if long_fit:
        long = fresh_noise_elbo(model, guide, batches, replace(inner, steps=long_fit), num_draws, seed)
        report["long_fit"] = long.to_dict()
        for row in curve:
            row["gap_to_long_fit"] = row["fresh_noise_elbo"]["neg_elbo"] - long.neg_elbo
    print(f"data {data}, {curve[0]['fresh_noise_elbo']['tokens']} tokens, nats/token:\n"
          f"{format_table(curve)}\n{format_legend(curve)}\n{format_diagnostics(curve, report)}")
    if plot:
        print(f"wrote {plot_curve(curve, plot)}")
    return report


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


def format_legend(curve: list[dict]) -> str:
    first = curve[0]
    return "\n".join([
        f"  -ELBO: {ELBO_LABEL}",
        f"  IWAE (S={first['importance_weighted']['num_samples']}): {IWAE_LABEL}",
        f"  prefix (P={first['prefix_predictive']['prefix_len']}, "
        f"{first['prefix_predictive']['tokens']} continuation tokens): {PREFIX_LABEL}",
        f"  publ.*: {PUBLISHED_LABEL} (ppl*: mean over sequences of exp per sequence)"])


def format_diagnostics(curve: list[dict], report: dict) -> str:
    """Per K: the gap of the fresh-noise bound to a long fit, active units, MI, KL per latent."""
    lines = ["latent use (q fitted with K steps; KL per latent vector in nats per sequence):",
             f"{'K':>4} {'gap':>8} {'AU':>7} {'MI':>7}  KL per latent"]
    for row in curve:
        d = row.get("diagnostics")
        gap = f"{row['gap_to_long_fit']:>8.4f}" if "gap_to_long_fit" in row else f"{'-':>8}"
        if d is None:
            lines.append(f"{row['inner_steps']:>4} {gap} {'-':>7} {'-':>7}  -")
            continue
        kl = "n/a" if d["kl_per_latent"] is None else " ".join(f"{v:.3f}" for v in d["kl_per_latent"])
        lines.append(f"{row['inner_steps']:>4} {gap} {d['active_units']:>3}/{d['units']:<3} "
                     f"{d['mutual_info']:>7.3f}  {kl}")
    if "long_fit" in report:
        lf = report["long_fit"]
        lines.append(f"  gap: fresh-noise -ELBO at K minus at a long fit of {lf['inner_steps']} steps "
                     f"({lf['reconstruction'] + lf['kl']:.4f}): how far K steps stop from the fit's best")
    lines.append("  AU: active units, Cov_x(E_q[z]) > 0.01 (Burda et al. 2016); MI: I(x; z) under the "
                 "aggregate posterior (Hoffman & Johnson 2016), at most log(sequences)")
    return "\n".join(lines)
