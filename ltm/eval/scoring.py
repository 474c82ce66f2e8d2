"""Scores of single texts under a fitted posterior: log p(continuation | context), log p(sentence).

Scoring a continuation c given a context for a latent model means: fit q(z | context) with K
inner steps, then score c under z_s ~ q fresh, averaged in probability space over S samples:
log p_q(c | context) = log (1/S) sum_s p(c | context, z_s) (exactly the prefix-predictive
protocol of `ltm.inference.bounds`). A whole sentence is scored with the importance-weighted
bound after fitting q on the sentence itself (a lower bound on log p(sentence), in expectation).
Deterministic families (empty guide) get exact log-likelihoods. Contexts longer than the model's
block_size are truncated from the LEFT to fit (context + continuation <= block_size + 1 tokens);
a continuation alone longer than block_size is an error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ltm.core.errors import ConfigError, DataError
from ltm.inference import InnerLoopConfig
from ltm.inference.bounds import importance_weighted_bound
from ltm.inference.posterior_fit import evaluation_mode, fit_posterior, predictive_logits


def model_block_size(model) -> int:
    """The most tokens the model's decoder reads at once (its block_size T)."""
    return int(model.decoder.cfg.block_size)


def fit_window(context_ids: list[int], continuation_ids: list[int], block_size: int) -> list[int]:
    """context + continuation, the context truncated from the left to fit block_size + 1 tokens."""
    if not continuation_ids:
        raise DataError("the continuation is empty: give at least one token to score.")
    if not context_ids:
        raise DataError("the context is empty: give at least one token (e.g. the BOS id) to condition on.")
    if len(continuation_ids) > block_size:
        raise DataError(f"the continuation has {len(continuation_ids)} tokens, more than the model's "
                        f"block_size {block_size}; score it in pieces.")
    keep = block_size + 1 - len(continuation_ids)
    return list(context_ids[-keep:]) + list(continuation_ids)


@torch.no_grad()
def _draw_logprobs(model, guide, prefix: torch.Tensor, inputs: torch.Tensor, start: int,
                   num_samples: int) -> torch.Tensor:
    """log p(. | inputs[:t], z_s) at positions t >= start for S fresh z_s ~ q: (S', B, C, V).

    S' = 1 for a deterministic family (every draw is the same)."""
    return torch.stack([F.log_softmax(logits.float(), -1)
                        for logits in predictive_logits(model, guide, prefix, inputs, start,
                                                        num_samples)])  # (S', B, C, V)


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
        raise ConfigError(f"num_samples S must be >= 1, got {num_samples}.")
    ids = fit_window(context_ids, continuation_ids, block_size or model_block_size(model))
    P = len(ids) - len(continuation_ids)  # context tokens kept
    with evaluation_mode(model, seed) as device:
        tokens = torch.tensor([ids], device=device)  # (1, P+C)
        prefix = tokens[:, :P]  # (1, P)
        fit_posterior(model, guide, prefix, inner)
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
        raise DataError(f"a sequence to score needs at least 2 tokens (e.g. BOS + one), got {len(ids)}.")
    ids = list(ids)[-((block_size or model_block_size(model)) + 1):]
    device = next(model.parameters()).device
    bound = importance_weighted_bound(model, guide, torch.tensor([ids], device=device), inner,
                                      num_samples, seed)
    return -bound.nll_bound * bound.tokens
