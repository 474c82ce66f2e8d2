"""The token likelihood as one fused cross-entropy, wrapped as a Pyro distribution.

    with MaterialisedLogits():   # score the "tokens" site through full (B, T, V) logits instead
        loss = elbo.differentiable_loss(family.model, pyro_guide(guide, family.prior), tokens)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger
from torch.distributions import constraints

from ltm.core.sites import IGNORE_INDEX, TOKEN_SITE
from ltm.models.fused_cross_entropy import fused_linear_cross_entropy


class MaterialisedLogits(Messenger):
    """A Pyro effect handler that scores the token site through full (..., T, V) logits instead of
    the fused head: the reference the fused cross-entropy is checked and benchmarked against."""

    def _process_message(self, msg) -> None:
        fn = msg["fn"]
        if msg["type"] == "sample" and msg["name"] == TOKEN_SITE and isinstance(fn, TokenSequence) \
                and fn.hidden is not None:
            msg["fn"] = TokenSequence(fn.logits)  # (..., T, V), computed here


class TokenSequence(TorchDistribution):
    """Independent categoricals over a sequence of tokens, scored with one fused cross-entropy.

    Batch shape `(...)`, event shape `(T,)`. `log_prob(targets)` is the summed log-likelihood per
    sequence; targets equal to `IGNORE_INDEX` contribute zero. Far cheaper than a `Categorical`
    over (B, T, V), which Pyro would score element by element. Build it from logits, or with
    `from_hidden` from hidden states and a linear head, which scores in row chunks and never holds
    the (..., T, V) logits (`ltm.models.fused_cross_entropy`); `.logits` is then computed only if
    asked for (by `sample`).

    Args:
        logits: Unnormalised next-token scores (..., T, V).
        hidden: Instead of logits: hidden states (..., T, D) whose logits are `hidden @ weight.T`.
        weight: The output head (V, D), with `hidden`.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.integer_interval(IGNORE_INDEX, 2**31 - 1), 1)
    has_enumerate_support = False

    def __init__(self, logits: torch.Tensor | None = None, validate_args=None, *,
                 hidden: torch.Tensor | None = None, weight: torch.Tensor | None = None):
        if (logits is None) == (hidden is None) or (hidden is None) != (weight is None):
            raise ValueError("TokenSequence takes either logits or hidden states and a weight.")
        self._logits, self.hidden, self.weight = logits, hidden, weight
        scores = logits if logits is not None else hidden  # (..., T, V) or (..., T, D)
        super().__init__(scores.shape[:-2], scores.shape[-2:-1], validate_args=False)

    @classmethod
    def from_hidden(cls, hidden: torch.Tensor, weight: torch.Tensor) -> TokenSequence:
        """The sequence whose logits are `hidden (..., T, D) @ weight (V, D).T`, scored fused."""
        return cls(hidden=hidden, weight=weight)

    @property
    def logits(self) -> torch.Tensor:
        """Next-token logits (..., T, V); computed on first use for a `from_hidden` sequence."""
        if self._logits is None:
            self._logits = self.hidden @ self.weight.T  # (..., T, V)
        return self._logits

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if self.hidden is not None:
            return TokenSequence.from_hidden(
                self.hidden.expand(batch_shape + self.hidden.shape[-2:]), self.weight)
        return TokenSequence(self._logits.expand(batch_shape + self._logits.shape[-2:]))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        value = value.expand(torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape))
        if self.hidden is not None:
            D = self.hidden.shape[-1]
            hidden = self.hidden.expand(value.shape + (D,))  # (..., T, D)
            nll = fused_linear_cross_entropy(hidden.reshape(-1, D), self.weight,
                                             value.reshape(-1))  # (... * T,)
            return -nll.view(value.shape).sum(-1)  # (...,)
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
