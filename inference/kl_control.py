"""Training-time control of the KL term against posterior collapse: free bits and KL warm-up.

Both change only the training objective (the inner fit of q and the slow step); every reported
bound uses the true ELBO. With neither set, the objective is the ELBO itself.

    control = KLControl(free_bits=0.25, warmup_steps=200)
    loss = control.loss(terms, step)  # -reconstruction + beta * sum_i max(floor, mean_B KL_i)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltm.core.errors import ConfigError
from ltm.inference.elbo import ElboTerms


@dataclass
class KLControl:
    """How the KL term enters the training objective.

    Attributes:
        free_bits: A floor, in nats, on each latent vector's KL averaged over the batch (Kingma
            et al. 2016): below it the KL of that vector costs the floor and gives no gradient,
            so the decoder may use that much information for free. 0 turns it off.
        warmup_steps: The KL weight beta rises linearly from 0 to 1 over this many outer steps
            (Bowman et al. 2016). 0 turns it off (beta = 1).
    """

    free_bits: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.free_bits < 0:
            raise ConfigError(f"free_bits must be >= 0 nats per latent vector, got {self.free_bits}.")
        if self.warmup_steps < 0:
            raise ConfigError(f"kl_warmup_steps must be >= 0, got {self.warmup_steps}.")

    @property
    def active(self) -> bool:
        """Whether the objective differs from the ELBO at some step."""
        return self.free_bits > 0 or self.warmup_steps > 0

    def beta(self, step: int) -> float:
        """The KL weight at outer step `step` (0-based: the first step is 0)."""
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, step / self.warmup_steps)

    def kl_term(self, terms: ElboTerms, step: int) -> torch.Tensor:
        """The KL part of the loss, summed over the batch (nats): beta * (floored) KL."""
        if self.free_bits == 0:
            return self.beta(step) * terms.kl.sum()
        if terms.kl_per_latent is None:
            raise ConfigError("free_bits needs the KL split per latent vector, and this prior/guide "
                              "pair does not factorise over the vectors; use a prior and guide "
                              "that do (e.g. standard_normal with the gaussian guide) or set "
                              "free_bits 0.")
        per_vector = terms.kl_per_latent  # (B, N)
        batch = per_vector.shape[0]
        floored = per_vector.mean(0).clamp(min=self.free_bits)  # (N,)
        return self.beta(step) * batch * floored.sum()

    def loss(self, terms: ElboTerms, step: int) -> torch.Tensor:
        """The training loss summed over the batch: -reconstruction + the controlled KL."""
        return -terms.reconstruction.sum() + self.kl_term(terms, step)
