"""Zero-shot evaluation sets: WikiText-2 and PTB perplexity, LAMBADA, BLiMP, from local files.

    python -m ltm.evaluate --checkpoint runs/ltm-default --batches 0 --inner-steps 4 --limit 200 \\
        --wikitext2 ../shared/data/wikitext2/test.txt --ptb ../shared/data/ptb/ptb.test.txt \\
        --lambada ../shared/data/lambada/lambada_test.jsonl --blimp ../shared/data/blimp

WikiText-2 and PTB are packed into blocks and scored prefix-predictively and by the fresh-noise
bound; LAMBADA continuations and BLiMP sentences by `ltm.eval.scoring`. Perplexities are per token
of the checkpoint's tokenizer (not word-level).
"""

from __future__ import annotations

import math
from dataclasses import replace

from ltm.core.errors import ConfigError, DataError
from ltm.data import TokenBlocks, eval_sets
from ltm.data.prepare import pack
from ltm.data.tokenizer import encode, special_ids
from ltm.eval.scoring import continuation_logprob, sequence_logprob
from ltm.inference import InnerLoopConfig
from ltm.inference.bounds import default_prefix_len, fresh_noise_elbo, prefix_predictive_perplexity

SETS = ("wikitext2", "ptb", "lambada", "blimp")
CONTINUATION_LABEL = ("log p(continuation | context): q(z) fitted on the context with K inner steps, "
                      "continuation scored as log mean_s p(c | context, z_s) over S fresh draws "
                      "(prefix-predictive); greedy = argmax of that mixture at every position")
SENTENCE_LABEL = ("log p(sentence) by the importance-weighted bound: q(z) fitted on the sentence with "
                  "K inner steps, log mean_s p(x, z_s)/q(z_s) over S draws (a lower bound in "
                  "expectation; exact for deterministic families)")


# -- the sets ------------------------------------------------------------------------------------


def corpus_perplexity(model, guide, tokenizer, docs: list[str], block_size: int, inner: InnerLoopConfig,
                      prefix_len: int | None = None, num_samples: int = 8, limit: int | None = None,
                      batch_size: int = 8, seed: int = 0) -> dict:
    """Documents packed into blocks (BOS doc EOS ...), scored prefix-predictively and by the bound.

    Returns:
        {"prefix_predictive": {...}, "fresh_noise_elbo": {...}, "blocks": n}, each inner dict the
        labelled `to_dict()` of `ltm.inference.bounds`, nats per token of the checkpoint's tokenizer.
    """
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
        raise DataError(f"the text holds fewer than {block_size + 1} tokens: nothing to score.")
    batches = [blocks.batch(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]  # (B, T+1)
    prefix_len = prefix_len or default_prefix_len(block_size + 1)
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
    right: dict[str, list[bool]] = {}
    for f in eval_sets.blimp_files(path):
        for i, (good, bad, uid) in enumerate(eval_sets.blimp_pairs(f)[:limit]):
            lp_good, lp_bad = (sequence_logprob(model, guide, encode(tokenizer, s, bos=True), inner,
                                                num_samples, seed + i) for s in (good, bad))
            right.setdefault(uid, []).append(lp_good > lp_bad)
    n = sum(len(v) for v in right.values())
    if n == 0:
        raise DataError(f"BLiMP path {str(path)!r} holds no pairs.")
    return {"accuracy": sum(sum(v) for v in right.values()) / n, "n": n,
            "per_phenomenon": {k: sum(v) / len(v) for k, v in sorted(right.items())},
            "label": SENTENCE_LABEL}


# -- every requested set at every budget ----------------------------------------------------------


def check_sets(paths: dict[str, str], limit: int | None = None) -> None:
    """Read each requested set once, so that a missing, empty or malformed file fails before any scoring.

    Args:
        paths: {set name (one of SETS): path}.
        limit: Examples per set (>= 1), or None for all.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}.")
    readers = {"wikitext2": eval_sets.wikitext_documents, "ptb": eval_sets.line_documents,
               "lambada": eval_sets.lambada_examples,
               "blimp": lambda p: [eval_sets.blimp_pairs(f) for f in eval_sets.blimp_files(p)]}
    for name, path in paths.items():
        readers[name](path)


def run_sets(model, guide, tokenizer, paths: dict[str, str], budgets: list[int], inner: InnerLoopConfig,
             block_size: int, *, num_samples: int = 8, limit: int | None = None, seed: int = 0,
             prefix_len: int | None = None, batch_size: int = 8) -> list[dict]:
    """Every set in `paths` at every budget K (`inner` with steps=K), printed; one JSON-ready dict per K.

    A deterministic family (`exact_nll`) has no K: it is scored once, its rows tagged "exact" (the
    one dict has inner_steps None).
    """
    rows = []
    common = {"num_samples": num_samples, "limit": limit, "seed": seed}
    exact = model.exact_nll
    for k in budgets[:1] if exact else budgets:
        inner_k, row = replace(inner, steps=k), {"inner_steps": None if exact else k}
        tag = "exact" if exact else f"K={k}"
        for name, fn in (("wikitext2", wikitext_perplexity), ("ptb", ptb_perplexity)):
            if name in paths:
                row[name] = fn(model, guide, tokenizer, paths[name], block_size, inner_k,
                               prefix_len=prefix_len, batch_size=batch_size, **common)
                p, e = row[name]["prefix_predictive"], row[name]["fresh_noise_elbo"]
                if exact:
                    print(f"{tag} {name}: perplexity {e['perplexity_bound']:.2f} (exact NLL, "
                          f"{row[name]['blocks']} blocks); of the continuation after "
                          f"P={p['prefix_len']}: {p['perplexity']:.2f}")
                else:
                    print(f"{tag} {name}: prefix-predictive perplexity {p['perplexity']:.2f} "
                          f"({p['tokens']} continuation tokens, P={p['prefix_len']}); fresh-noise "
                          f"ELBO perplexity bound {e['perplexity_bound']:.2f} "
                          f"({row[name]['blocks']} blocks)")
        if "lambada" in paths:
            row["lambada"] = r = lambada(model, guide, tokenizer, paths["lambada"], inner_k, **common)
            print(f"{tag} lambada: accuracy {r['accuracy']:.4f}, last-word perplexity "
                  f"{r['perplexity']:.2f} (n={r['n']}; prefix-predictive)")
        if "blimp" in paths:
            row["blimp"] = r = blimp(model, guide, tokenizer, paths["blimp"], inner_k, **common)
            print(f"{tag} blimp: accuracy {r['accuracy']:.4f} (n={r['n']}; sentences scored by the "
                  f"importance-weighted bound, S={num_samples})")
        rows.append(row)
    print(f"  lambada: {CONTINUATION_LABEL}\n  blimp: {SENTENCE_LABEL}\n  perplexities are per token of "
          f"the checkpoint's tokenizer; contexts are truncated from the left to the block")
    return rows
