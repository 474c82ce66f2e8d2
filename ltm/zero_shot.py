"""Zero-shot evaluation sets: WikiText-2 and PTB perplexity, LAMBADA, BLiMP, from local files.

    python -m ltm.evaluate --checkpoint runs/ltm-default --batches 0 --inner-steps 4 --limit 200 \\
        --wikitext2 ../shared/data/wikitext2/test.txt --ptb ../shared/data/ptb/ptb.test.txt \\
        --lambada ../shared/data/lambada/lambada_test.jsonl --blimp ../shared/data/blimp

Scoring a continuation c given a context for a latent model means: fit q(z | context) with K
inner steps, then score c under z_s ~ q fresh, averaged in probability space over S samples:
log p_q(c | context) = log (1/S) sum_s p(c | context, z_s) (exactly the prefix-predictive
protocol of `inference.bounds`). A whole sentence (BLiMP) is scored with the importance-weighted
bound after fitting q on the sentence itself (a lower bound on log p(sentence), in expectation).
Deterministic families (empty guide) get exact log-likelihoods. Contexts longer than the model's
block_size are truncated from the LEFT to fit (context + continuation <= block_size + 1 tokens);
a continuation alone longer than block_size is an error. Perplexities are per token of the
checkpoint's tokenizer (not word-level).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from pyro import poutine

from inference.bounds import (  # the shared fit/score helpers of the honest bounds
    _evaluating,
    _fit,
    fresh_noise_elbo,
    importance_weighted_bound,
    next_token_logits,
    prefix_predictive_perplexity,
)
from inference.inner_loop import InnerLoopConfig
from inference.sites import LATENT_SITE
from ltm.data import eval_sets

SETS = ("wikitext2", "ptb", "lambada", "blimp")
CONTINUATION_LABEL = ("log p(continuation | context): q(z) fitted on the context with K inner steps, "
                      "continuation scored as log mean_s p(c | context, z_s) over S fresh draws "
                      "(prefix-predictive); greedy = argmax of that mixture at every position")
SENTENCE_LABEL = ("log p(sentence) by the importance-weighted bound: q(z) fitted on the sentence with "
                  "K inner steps, log mean_s p(x, z_s)/q(z_s) over S draws (a lower bound in "
                  "expectation; exact for deterministic families)")


def model_block_size(model) -> int:
    """The most tokens the model's decoder reads at once (its block_size T)."""
    return int(model.decoder.cfg.block_size)


def _fit_window(context_ids: list[int], continuation_ids: list[int], block_size: int) -> list[int]:
    """context + continuation, the context truncated from the left to fit block_size + 1 tokens."""
    if not continuation_ids:
        raise ValueError("the continuation is empty: give at least one token to score.")
    if not context_ids:
        raise ValueError("the context is empty: give at least one token (e.g. the BOS id) to condition on.")
    if len(continuation_ids) > block_size:
        raise ValueError(f"the continuation has {len(continuation_ids)} tokens, more than the model's "
                         f"block_size {block_size}; score it in pieces.")
    keep = block_size + 1 - len(continuation_ids)
    return list(context_ids[-keep:]) + list(continuation_ids)


@torch.no_grad()
def _draw_logprobs(model, guide, prefix: torch.Tensor, inputs: torch.Tensor, start: int,
                   num_samples: int) -> torch.Tensor:
    """log p(. | inputs[:t], z_s) at positions t >= start for S fresh z_s ~ q: (S', B, C, V).

    S' = 1 for a deterministic family (every draw is the same)."""
    out = []
    for _ in range(num_samples):
        node = poutine.trace(guide).get_trace(prefix).nodes.get(LATENT_SITE)
        z = None if node is None else node["value"]  # (B, N, D) or None
        logits = next_token_logits(model, inputs, z)[:, start:]  # (B, C, V)
        out.append(F.log_softmax(logits.float(), -1))
        if z is None:
            break
    return torch.stack(out)  # (S', B, C, V)


def continuation_logprob(model, guide, context_ids: list[int], continuation_ids: list[int],
                         inner: InnerLoopConfig, num_samples: int = 8, seed: int = 0,
                         block_size: int | None = None) -> tuple[float, bool]:
    """log p_q(continuation | context) in nats, and whether greedy decoding reproduces it exactly.

    Fits q(z | context) with `inner.steps` steps (none for a one-token context), then
    log p_q(c | ctx) = log (1/S) sum_s prod_t p(c_t | ctx, c_<t, z_s). Greedy is judged against
    the same mixture's next-token distribution at each position,
    p_q(v | ctx, c_<t) = sum_s w_s(t) p(v | ctx, c_<t, z_s), w_s(t) ∝ p(c_<t | ctx, z_s);
    the per-position log-probs of the true tokens sum to the returned log-prob.

    Args:
        context_ids: Context token ids (>= 1; truncated from the left to fit the block).
        continuation_ids: Token ids to score (1 .. block_size of them).
        inner: Inner-loop settings (K = `inner.steps`).
        num_samples: S draws from q (ignored by deterministic families).
        seed: Seed of the fit's and the draws' noise (the caller's RNG is untouched).
        block_size: The model's window (default: its decoder's block_size).

    Raises:
        ValueError: for S < 1, an empty context or continuation, or a continuation over the block.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples S must be >= 1, got {num_samples}.")
    ids = _fit_window(context_ids, continuation_ids, block_size or model_block_size(model))
    P = len(ids) - len(continuation_ids)  # context tokens kept
    with _evaluating(model, seed) as device:
        tokens = torch.tensor([ids], device=device)  # (1, P+C)
        prefix = tokens[:, :P]  # (1, P)
        _fit(model, guide, prefix, inner if P > 1 else replace(inner, steps=0))
        logp = _draw_logprobs(model, guide, prefix, tokens[:, :-1], P - 1, num_samples)[:, 0]  # (S, C, V)
    target = tokens[0, P:].to(logp.device)  # (C,)
    tok_lp = logp.gather(-1, target.expand(logp.shape[0], -1)[..., None])[..., 0]  # (S, C)
    seen = torch.cumsum(tok_lp, -1) - tok_lp  # (S, C): log p(c_<t | ctx, z_s)
    weights = seen.log_softmax(0)  # (S, C) posterior weights of each draw before position t
    mixture = (weights[..., None] + logp).logsumexp(0)  # (C, V) log p_q(. | ctx, c_<t)
    greedy = bool((mixture.argmax(-1) == target).all())
    total = tok_lp.sum(-1).logsumexp(0) - math.log(logp.shape[0])
    return float(total), greedy


def sequence_logprob(model, guide, ids: list[int], inner: InnerLoopConfig, num_samples: int = 8,
                     seed: int = 0, block_size: int | None = None) -> float:
    """log p(ids[1:] | ids[0]) in nats by the importance-weighted bound (see SENTENCE_LABEL).

    Give ids starting with BOS to score a whole sentence; longer sequences keep their last
    block_size + 1 tokens. Exact for deterministic families.
    """
    if len(ids) < 2:
        raise ValueError(f"a sequence to score needs at least 2 tokens (e.g. BOS + one), got {len(ids)}.")
    ids = list(ids)[-((block_size or model_block_size(model)) + 1):]
    device = next(model.parameters()).device
    bound = importance_weighted_bound(model, guide, torch.tensor([ids], device=device), inner,
                                      num_samples, seed)
    return -bound.nll_bound * bound.tokens


# -- the sets ------------------------------------------------------------------------------------


def corpus_perplexity(model, guide, tokenizer, docs: list[str], block_size: int, inner: InnerLoopConfig,
                      prefix_len: int | None = None, num_samples: int = 8, limit: int | None = None,
                      batch_size: int = 8, seed: int = 0) -> dict:
    """Documents packed into blocks (BOS doc EOS ...), scored prefix-predictively and by the bound.

    Returns:
        {"prefix_predictive": {...}, "fresh_noise_elbo": {...}, "blocks": n}, each inner dict the
        labelled `to_dict()` of `inference.bounds`, nats per token of the checkpoint's tokenizer.
    """
    from ltm.data import TokenBlocks
    from ltm.data.prepare import pack
    from ltm.tokenizer import special_ids

    bos, eos, _ = special_ids(tokenizer)
    if limit:  # tokenize only the documents the first `limit` blocks need
        need, have = limit * block_size + 1, 1
        for end, doc in enumerate(docs, 1):
            have += len(tokenizer.encode(doc, add_special_tokens=False).ids) + 2  # + BOS/EOS (upper)
            if have >= need + end:  # enough even when BOS == EOS is one shared separator
                docs = docs[:end]
                break
    blocks = TokenBlocks(pack(tokenizer, docs, bos, eos, "tokenizing"), block_size)
    n = min(len(blocks), limit or len(blocks))
    if n == 0:
        raise ValueError(f"the text holds fewer than {block_size + 1} tokens: nothing to score.")
    batches = [blocks.batch(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]  # (B, T+1)
    prefix_len = prefix_len or (block_size + 1) // 2
    prefix = prefix_predictive_perplexity(model, guide, batches, prefix_len, inner, num_samples, seed)
    bound = fresh_noise_elbo(model, guide, batches, inner, seed=seed)
    return {"prefix_predictive": prefix.to_dict(), "fresh_noise_elbo": bound.to_dict(), "blocks": n}


def wikitext_perplexity(model, guide, tokenizer, path, block_size: int, inner: InnerLoopConfig,
                        **kwargs) -> dict:
    """WikiText-2 (tokenized release; one document per article): see `corpus_perplexity`."""
    return corpus_perplexity(model, guide, tokenizer, eval_sets.wikitext_documents(path), block_size,
                             inner, **kwargs)


def ptb_perplexity(model, guide, tokenizer, path, block_size: int, inner: InnerLoopConfig,
                   **kwargs) -> dict:
    """PTB (one document per sentence): see `corpus_perplexity`."""
    return corpus_perplexity(model, guide, tokenizer, eval_sets.line_documents(path), block_size,
                             inner, **kwargs)


def lambada(model, guide, tokenizer, path, inner: InnerLoopConfig, num_samples: int = 8,
            limit: int | None = None, seed: int = 0) -> dict:
    """LAMBADA last-word accuracy (greedy reproduces every token of " " + word) and perplexity.

    Returns:
        {"accuracy", "perplexity" (exp of the mean negative log-prob of the last word, per word,
        as lm-eval reports it), "perplexity_per_token", "n", "label"}.
    """
    from ltm.tokenizer import encode

    examples = eval_sets.lambada_examples(path)[:limit]
    hits, nll, n_tok = 0, 0.0, 0
    for i, (context, word) in enumerate(examples):
        cont = encode(tokenizer, " " + word)
        lp, greedy = continuation_logprob(model, guide, encode(tokenizer, context, bos=True), cont, inner,
                                          num_samples, seed + i)
        hits, nll, n_tok = hits + greedy, nll - lp, n_tok + len(cont)
    n = len(examples)
    return {"accuracy": hits / n, "perplexity": math.exp(min(nll / n, 700.0)),
            "perplexity_per_token": math.exp(min(nll / n_tok, 700.0)), "n": n, "label": CONTINUATION_LABEL}


def blimp(model, guide, tokenizer, path, inner: InnerLoopConfig, num_samples: int = 8,
          limit: int | None = None, seed: int = 0) -> dict:
    """BLiMP minimal-pair accuracy: log p(good) > log p(bad), both by `sequence_logprob`.

    Args:
        path: A `<paradigm>.jsonl(.gz)` file or a folder of them.
        limit: Pairs per paradigm file (default: all).

    Returns:
        {"accuracy", "n", "per_phenomenon": {UID: accuracy}, "label"}.
    """
    from ltm.tokenizer import encode

    right: dict[str, list[bool]] = {}
    for f in eval_sets.blimp_files(path):
        for i, (good, bad, uid) in enumerate(eval_sets.blimp_pairs(f)[:limit]):
            lp_good, lp_bad = (sequence_logprob(model, guide, encode(tokenizer, s, bos=True), inner,
                                                num_samples, seed + i) for s in (good, bad))
            right.setdefault(uid, []).append(lp_good > lp_bad)
    n = sum(len(v) for v in right.values())
    if n == 0:
        raise ValueError(f"BLiMP path {str(path)!r} holds no pairs.")
    return {"accuracy": sum(sum(v) for v in right.values()) / n, "n": n,
            "per_phenomenon": {k: sum(v) / len(v) for k, v in sorted(right.items())},
            "label": SENTENCE_LABEL}


# -- the command line (flags of `python -m ltm.evaluate`) -----------------------------------------


def add_arguments(parser) -> None:
    """The zero-shot flags: a path per set, --limit."""
    group = parser.add_argument_group("zero-shot sets (local files; see ltm.zero_shot)")
    group.add_argument("--wikitext2", default=None, help="WikiText-2 wiki.*.tokens file (e.g. test.txt)")
    group.add_argument("--ptb", default=None, help="PTB ptb.*.txt file")
    group.add_argument("--lambada", default=None, help="LAMBADA lambada_test.jsonl")
    group.add_argument("--blimp", default=None, help="BLiMP <paradigm>.jsonl(.gz) file or folder")
    group.add_argument("--limit", type=int, default=None, help="at most N examples per set (blocks for "
                       "WikiText-2/PTB, passages for LAMBADA, pairs per paradigm for BLiMP)")


def requested_sets(args) -> dict[str, str]:
    """{set: path} of the sets named on the command line, each checked to be readable."""
    sets = {name: getattr(args, name) for name in SETS if getattr(args, name, None)}
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}.")
    readers = {"wikitext2": eval_sets.wikitext_documents, "ptb": eval_sets.line_documents,
               "lambada": eval_sets.lambada_examples,
               "blimp": lambda p: [eval_sets.blimp_pairs(f) for f in eval_sets.blimp_files(p)]}
    for name, path in sets.items():
        readers[name](path)  # fail before any scoring on a missing, empty or malformed file
    return sets


def run_sets(model, guide, tokenizer, config, args, budgets: list[int]) -> list[dict]:
    """Every requested set at every budget K, printed; one JSON-ready dict per K."""
    sets, rows = requested_sets(args), []
    common = {"num_samples": args.iwae_samples, "limit": args.limit, "seed": args.seed}
    for k in budgets:
        inner, row = config.inner_config(k), {"inner_steps": k}
        for name in ("wikitext2", "ptb"):
            if name in sets:
                fn = wikitext_perplexity if name == "wikitext2" else ptb_perplexity
                row[name] = fn(model, guide, tokenizer, sets[name], config.block_size, inner,
                               prefix_len=args.prefix_len, batch_size=args.batch_size or config.batch_size,
                               **common)
                p, e = row[name]["prefix_predictive"], row[name]["fresh_noise_elbo"]
                print(f"K={k} {name}: prefix-predictive perplexity {p['perplexity']:.2f} "
                      f"({p['tokens']} continuation tokens, P={p['prefix_len']}); fresh-noise ELBO "
                      f"perplexity bound {e['perplexity_bound']:.2f} ({row[name]['blocks']} blocks)")
        if "lambada" in sets:
            row["lambada"] = r = lambada(model, guide, tokenizer, sets["lambada"], inner, **common)
            print(f"K={k} lambada: accuracy {r['accuracy']:.4f}, last-word perplexity "
                  f"{r['perplexity']:.2f} (n={r['n']}; prefix-predictive)")
        if "blimp" in sets:
            row["blimp"] = r = blimp(model, guide, tokenizer, sets["blimp"], inner, **common)
            print(f"K={k} blimp: accuracy {r['accuracy']:.4f} (n={r['n']}; sentences scored by the "
                  f"importance-weighted bound, S={args.iwae_samples})")
        rows.append(row)
    print(f"  lambada: {CONTINUATION_LABEL}\n  blimp: {SENTENCE_LABEL}\n  perplexities are per token of "
          f"the checkpoint's tokenizer; contexts are truncated from the left to the block")
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m ltm.zero_shot ...`: `python -m ltm.evaluate --batches 0 ...`."""
    from ltm.evaluate import main as evaluate_main

    return evaluate_main(["--batches", "0", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
