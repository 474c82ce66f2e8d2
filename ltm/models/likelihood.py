"""The token likelihood as one fused cross-entropy, wrapped as a Pyro distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from ltm.core.sites import IGNORE_INDEX


class TokenSequence(TorchDistribution):
    """Independent categoricals over a sequence of tokens, scored with one fused cross-entropy.

    Batch shape `logits.shape[:-2]`, event shape `(T,)`. `log_prob(targets)` is the summed
    log-likelihood per sequence; targets equal to `IGNORE_INDEX` contribute zero. Far cheaper than
    a `Categorical` over (B, T, V), which Pyro would score element by element.

    Args:
        logits: Unnormalised next-token scores (..., T, V).
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.integer_interval(IGNORE_INDEX, 2**31 - 1), 1)
    has_enumerate_support = False

    def __init__(self, logits: torch.Tensor, validate_args=None):
        self.logits = logits
        super().__init__(logits.shape[:-2], logits.shape[-2:-1], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return TokenSequence(self.logits.expand(batch_shape + self.logits.shape[-2:]))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        V = self.logits.shape[-1]
        logits = self.logits.expand(value.shape + (V,))  # (..., T, V)
        nll = F.cross_entropy(logits.reshape(-1, V), value.reshape(-1), reduction="none",
                              ignore_index=IGNORE_INDEX)  # (... * T,)
        return -nll.view(value.shape).sum(-1)  # (...,)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        probs = self.logits.softmax(-1)
        flat = probs.reshape(-1, probs.shape[-1])
        n = int(torch.Size(sample_shape).numel())
        draws = torch.multinomial(flat, n, replacement=True).T  # (n, ... * T)
        return draws.reshape(torch.Size(sample_shape) + self.logits.shape[:-1])
