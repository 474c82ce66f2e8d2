"""Held-out scoring for `python -m ltm.evaluate`: the blocks, the four protocols at each K, the table.

The protocols (`ltm.inference.bounds`), each labelled in the table and the JSON: the fresh-noise
ELBO bound (reconstruction + KL per token); the importance-weighted bound with S samples;
prefix-predictive NLL (q fitted on the first P tokens of each block, the rest scored: comparable
with an autoregressive model's perplexity); and the published protocol (same noise for fit and
score; optimistic, not a bound). A family whose NLL is exact gets one heading, its exact NLL.
A guide without a tractable density (a MAP point, Langevin samples) gets the prefix-predictive NLL
only: the other three need log q(z) (`ltm.eval.curve.default_protocols`).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from ltm.core.errors import ConfigError, DataError, MissingFileError
from ltm.core.loss_mask import scored_targets
from ltm.data import TokenBlocks, prepare_data
from ltm.data.corpus import load_documents
from ltm.data.prepare import pack
from ltm.data.tokenizer import special_ids
from ltm.eval.curve import (
    NEEDS_DENSITY,
    PROTOCOL_KEYS,
    bounds_vs_inner_steps,
    default_protocols,
    plot_curve,
)
from ltm.eval.exact import exact_scores, format_exact
from ltm.inference import InnerLoopConfig
from ltm.inference.bound_results import ELBO_LABEL, IWAE_LABEL, PREFIX_LABEL, PUBLISHED_LABEL
from ltm.inference.bounds import default_prefix_len, fresh_noise_elbo
from ltm.inference.diagnostics import diagnostics_skipped

TITLES = {"elbo": "fresh-noise ELBO", "iwae": "importance-weighted bound",
          "prefix": "prefix-predictive NLL", "published": "published protocol"}

PROTOCOLS = {"fresh_noise_elbo": ELBO_LABEL, "importance_weighted": IWAE_LABEL,
             "prefix_predictive": PREFIX_LABEL, "published_protocol": PUBLISHED_LABEL}
# (column header, number in the protocol's dict, format) per protocol, in table order
COLUMNS = {"elbo": (("recon", "reconstruction", "8.4f"), ("KL", "kl", "8.4f"), ("-ELBO", "neg_elbo", "8.4f"),
                    ("ppl <=", "perplexity_bound", "9.2f")),
           "iwae": (("IWAE", "nll_bound", "8.4f"), ("ppl <=", "perplexity_bound", "9.2f")),
           "prefix": (("prefix", "nll", "8.4f"), ("ppl", "perplexity", "9.2f")),
           "published": (("publ.*", "neg_elbo", "8.4f"), ("ppl*", "mean_sequence_perplexity", "9.2f"))}
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
        raise MissingFileError(f"data file {path} does not exist.")
    with _quiet_datasets():
        docs = load_documents(path, config.data.text_field, Path(config.data_cache_dir()) / "hf",
                              config.data.encoding)
    bos, eos, _ = special_ids(tokenizer)
    return TokenBlocks(pack(tokenizer, docs, bos, eos, "tokenizing"), config.data.block_size)


def held_out_blocks(config, tokenizer, data_file: str | None = None, split: str = "val"):
    """The blocks to score: a text file tokenized with the checkpoint's tokenizer, or a split of the
    run's own dataset (prepared again, and checked to give the checkpoint's tokenizer; a reasoning
    curriculum's at the stage of the run's last step)."""
    if data_file:
        return text_blocks(data_file, tokenizer, config)
    data = prepare_data(config.data, config.data_cache_dir())
    if data.tokenizer.to_str() != tokenizer.to_str():
        raise DataError(f"the {config.data.dataset!r} data prepared here has another tokenizer than the "
                        f"checkpoint's (a changed corpus or library version); score a text file with "
                        f"--data instead.")
    blocks = data.train if split == "train" else data.val
    if hasattr(blocks, "set_step"):
        blocks.set_step(config.max_steps)
    return blocks


def check_long_fit(long_fit: int | None, protocols: list[str]) -> None:
    """Refuse a long fit without the ELBO: its gap to each K is a difference of fresh-noise ELBOs."""
    if long_fit and "elbo" not in protocols:
        raise ConfigError("--long-fit reports each K's gap in the fresh-noise ELBO: add elbo to --protocols.")


def absent_note(guide, protocols: list[str]) -> str | None:
    """One sentence on why the protocols needing log q(z) are absent for a guide without a density."""
    missing = [TITLES[n] for n in NEEDS_DENSITY if n not in protocols]
    if guide.has_density or not missing:
        return None
    listed = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
    return (f"not shown: the {listed}, which need log q(z), while guide "
            f"{type(guide).__name__} has no tractable density (a point mass or a sampler's output); "
            f"the prefix-predictive NLL needs none.")


def score_held_out(model, guide, batches, budgets: list[int], inner: InnerLoopConfig, *, data: str,
                   num_samples: int = 8, prefix_len: int | None = None, num_draws: int = 1,
                   seed: int = 0, plot: str | None = None, long_fit: int | None = None,
                   protocols: list[str] | None = None) -> dict:
    """The protocols (default: all that apply to the guide) on held-out batches at every budget K,
    printed as a table, with the posterior diagnostics at each K and the gap to a long fit; for a
    deterministic family, its exact NLL once (`ltm.eval.exact`).

    Returns:
        The JSON-ready part of the report: {"data", "exact", "note", "protocols", "results": curve}
        (and "long_fit"), or for a deterministic family {"data", "exact", "exact_nll", "results": []}.

    Raises:
        ValueError: for `long_fit` without the "elbo" protocol (the gap is in fresh-noise ELBOs).
    """
    prefix_len = prefix_len or default_prefix_len(batches[0].shape[1])
    if model.exact_nll:
        scores = exact_scores(model, batches, prefix_len, seed)
        print(f"data {data}:\n{format_exact(scores)}")
        return {"data": data, "exact": True, "note": EXACT_NOTE, "exact_nll": scores, "results": []}
    protocols = default_protocols(guide) if protocols is None else list(protocols)
    check_long_fit(long_fit, protocols)
    curve = bounds_vs_inner_steps(model, guide, batches, budgets, num_samples, inner, prefix_len,
                                  num_draws, seed, diagnostics=True, protocols=protocols)
    note = absent_note(guide, protocols)
    report = {"data": data, "exact": False, "note": note, "protocols": protocols, "results": curve}
    if long_fit:
        long = fresh_noise_elbo(model, guide, batches, replace(inner, steps=long_fit), num_draws, seed)
        report["long_fit"] = long.to_dict()
        for row in curve:
            row["gap_to_long_fit"] = row["fresh_noise_elbo"]["neg_elbo"] - long.neg_elbo
    n_tokens = sum(int(scored_targets(b).sum()) for b in batches)
    skipped = diagnostics_skipped(model, guide)
    if skipped:
        report["diagnostics_skipped"] = skipped
    diagnostics = (f"latent use: not computed ({skipped})" if skipped and "long_fit" not in report
                   else format_diagnostics(curve, report))
    print(f"data {data}, {n_tokens} tokens, nats/token:\n{format_table(curve, protocols)}\n"
          f"{format_legend(curve, protocols)}" + (f"\n  {note}" if note else "") + f"\n{diagnostics}")
    if plot:
        print(f"wrote {plot_curve(curve, plot)}")
    return report


def format_table(curve: list[dict], protocols=tuple(PROTOCOL_KEYS)) -> str:
    """One row per K: fresh-noise ELBO (recon, KL, sum), IWAE, prefix-predictive, published (those
    in `protocols`)."""
    columns = [(PROTOCOL_KEYS[n], *col) for n in PROTOCOL_KEYS if n in protocols for col in COLUMNS[n]]
    lines = [" ".join([f"{'K':>4}"] + [f"{head:>{fmt.split('.')[0]}}" for _, head, _, fmt in columns])]
    for row in curve:
        lines.append(" ".join([f"{row['inner_steps']:>4}"] +
                              [f"{row[key][field]:>{fmt}}" for key, _, field, fmt in columns]))
    return "\n".join(lines)


def format_legend(curve: list[dict], protocols=tuple(PROTOCOL_KEYS)) -> str:
    first, lines = curve[0], []
    if "elbo" in protocols:
        lines.append(f"  -ELBO: {ELBO_LABEL}")
    if "iwae" in protocols:
        lines.append(f"  IWAE (S={first['importance_weighted']['num_samples']}): {IWAE_LABEL}")
    if "prefix" in protocols:
        p = first["prefix_predictive"]
        lines.append(f"  prefix (P={p['prefix_len']}, S={p['num_samples']}, {p['tokens']} continuation "
                     f"tokens): {PREFIX_LABEL}")
    if "published" in protocols:
        lines.append(f"  publ.*: {PUBLISHED_LABEL} (ppl*: mean over sequences of exp per sequence)")
    return "\n".join(lines)


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
