"""The halting router of adaptive latent CoT: continue probabilities, exit masses, router loss.

Per token t the router reads the state h_{t,k} of latent step (level) k and gives a continue
probability c_{t,k}. The reach is r_{t,0} = 1, r_{t,k+1} = r_{t,k} c_{t,k}; the exit mass of step
k is r_{t,k} (1 - c_{t,k}), and the last computed step takes all the remaining mass r_{t,k}. The
expected number of latent steps of token t is sum_{k>=1} r_{t,k}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Router(nn.Module):
    """A linear read-out of the hidden state giving the logit of the continue probability.

    Args:
        d_model: Hidden width D.
        init_bias: Initial bias of the logit (0: continue with probability 1/2).
    """

    def __init__(self, d_model: int, init_bias: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.constant_(self.proj.bias, init_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Continue logits (B, T) from hidden states (B, T, D); c = sigmoid(logit)."""
        return self.proj(hidden).squeeze(-1)  # (B, T)


def exit_weights(reach: torch.Tensor) -> torch.Tensor:
    """Exit masses (B, T, K) from the reach of each computed step (B, T, K).

    `reach[..., k]` is r_{t,k} where step k was computed for token t and 0 where it was skipped
    (pruned or beyond the last level). The exit mass is r_k - r_{k+1}: r_k (1 - c_k) before the
    last computed step, r_k on it. The masses of a token sum to r_0 = 1.
    """
    nxt = F.pad(reach[..., 1:], (0, 1))  # (B, T, K): r_{k+1}, 0 after the last step
    return reach - nxt  # (B, T, K)


def router_loss(stop_logits: list[torch.Tensor], correct: list[torch.Tensor], active: torch.Tensor,
                reach: torch.Tensor, target_mask: torch.Tensor, lam: float, beta: float) -> torch.Tensor:
    """Correctness-aware router loss per sequence (B,).

    beta * sum_{t,k} BCE(stop_{t,k}, p_{t,k}) + lam * sum_t E[latent steps of t], where
    stop_{t,k} = 1 - c_{t,k} and p_{t,k} is the probability of the true next token under step k's
    own read-out, held fixed (stop-gradient): stop where the step is already correct. The BCE counts
    only computed steps that have a continue decision (k < last level) and real targets.

    Balance: on a step that is wrong (p ~ 0) the BCE pushes the continue logit up with force ~beta
    while the penalty pushes it down with force ~lambda * c, so c settles near beta / lambda;
    "lambda large" (halting everywhere) means lambda >> beta.

    Args:
        stop_logits: Per decided step k, logits of the stop probability (B, T), i.e. -continue logit.
        correct: Per decided step k, p_{t,k} (B, T), detached.
        active: Whether each step was computed (B, T, K), bool.
        reach: Reach r_{t,k} of each step, 0 where skipped (B, T, K).
        target_mask: Tokens with a real target (B, T), bool.
        lam: Continuation penalty lambda per expected latent step.
        beta: Weight of the accuracy (BCE) term.
    """
    keep = target_mask.to(reach.dtype)  # (B, T)
    acc = reach.new_zeros(reach.shape[0])  # (B,)
    for k, (logit, p) in enumerate(zip(stop_logits, correct, strict=True)):
        bce = F.binary_cross_entropy_with_logits(logit, p, reduction="none")  # (B, T)
        acc = acc + (bce * active[..., k] * keep).sum(-1)
    steps = reach[..., 1:].sum(-1)  # (B, T)
    return beta * acc + lam * (steps * keep).sum(-1)  # (B,)
