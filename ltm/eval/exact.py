"""Held-out scores of a deterministic family: its exact NLL, computed once per batch.

A family whose thoughts are deterministic (`Family.exact_nll`) has no latent to infer: every honest
protocol (fresh-noise ELBO, IWAE, prefix-predictive) is its exact NLL, for every K and every
sample. So one forward pass per batch gives both numbers reported here: the NLL of all tokens, and
that of the continuation after the first P tokens (what prefix-predictive scores for a stochastic
family). For PonderLM-2 this is one exact sequential thought solve per batch, not one per protocol.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ltm.core.errors import ConfigError
from ltm.core.loss_mask import split_block
from ltm.core.sites import IGNORE_INDEX
from ltm.inference.data_parallel import local_batches, reduce_sums
from ltm.inference.posterior_fit import check_prefix, evaluation_mode

EXACT_LABEL = "exact NLL: the family's thoughts are deterministic, so its likelihood is exact"


def exact_scores(family, batches, prefix_len: int, seed: int = 0) -> dict:
    """Exact NLL per token of every target, and of the targets after the first `prefix_len` tokens.

    Args:
        family: A family with `exact_nll`.
        batches: Blocks (B, L) of token ids, or a list of them.
        prefix_len: Prefix P (1 <= P < L) for the continuation NLL.

    Returns:
        {"label", "nll", "perplexity", "tokens", "sequences", "continuation": {"prefix_len", "nll",
        "perplexity", "tokens"}}, NLLs in nats per token.

    Raises:
        ValueError: for a family whose thoughts are stochastic (no exact NLL to compute).
    """
    if not family.exact_nll:
        raise ConfigError(f"model '{family.name}' has stochastic thoughts, so its NLL is not exact "
                          f"and one forward pass does not give it; score it with the fresh-noise ELBO, "
                          f"the importance-weighted bound or prefix-predictive NLL (ltm.inference.bounds).")
    total, n_tok, cont, n_cont, n_seq = 0.0, 0, 0.0, 0, 0
    with evaluation_mode(family, seed) as device, torch.no_grad():
        for batch in local_batches(batches, device):
            check_prefix(prefix_len, batch.shape[1])
            inputs, targets = split_block(batch)  # (B, T) each
            logits = family.full_logits(inputs)  # (B, T, V)
            nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none",
                                  ignore_index=IGNORE_INDEX)  # (B, T)
            scored = targets != IGNORE_INDEX
            total += nll.sum().item()
            n_tok += int(scored.sum())
            cont += nll[:, prefix_len - 1:].sum().item()
            n_cont += int(scored[:, prefix_len - 1:].sum())
            n_seq += batch.shape[0]
    total, n_tok, cont, n_cont, n_seq = (reduce_sums(total, n_tok, cont, n_cont, n_seq))
    n_tok, n_cont, n_seq = int(n_tok), int(n_cont), int(n_seq)
    return {"label": EXACT_LABEL, "nll": total / n_tok, "perplexity": math.exp(min(total / n_tok, 700)),
            "tokens": n_tok, "sequences": n_seq,
            "continuation": {"prefix_len": prefix_len, "nll": cont / n_cont,
                             "perplexity": math.exp(min(cont / n_cont, 700)), "tokens": n_cont}}


def format_exact(scores: dict) -> str:
    """Two lines: the exact NLL, and that of the continuation after the prefix."""
    c = scores["continuation"]
    return (f"exact NLL {scores['nll']:.4f} nats/token, perplexity {scores['perplexity']:.2f} "
            f"({scores['tokens']} tokens)\n"
            f"continuation after P={c['prefix_len']} tokens: exact NLL {c['nll']:.4f} nats/token, "
            f"perplexity {c['perplexity']:.2f} ({c['tokens']} tokens)\n"
            f"  ({EXACT_LABEL})")
