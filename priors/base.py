"""The prior contract: a module whose call returns a Pyro distribution over one sequence's thoughts."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ltm.core.errors import ConfigError


class Prior(nn.Module):
    """Base class of every prior over latent thoughts.

    A prior is an `nn.Module` built with the thought shape `(num_latents, latent_dim)`. Calling it
    returns a `pyro.distributions` distribution whose `event_shape` is that shape (batch shape
    `()` for sequence-level thoughts; Pyro's plate broadcasts it over the batch). Token-level
    families pass the thought's `context`. Learnable parameters are ordinary `nn.Parameter`s:
    the slow optimiser trains them and checkpoints save them.

    Attributes:
        is_degenerate: True for point-mass (Delta) priors; they pair only with the prior guide
            (or, for token-level thoughts written with `pyro.deterministic`, the empty guide).
        token_level: True for priors over a token's thought given its context.
    """

    is_degenerate: bool = False
    token_level: bool = False  # True: a prior over one token's thought given its context

    def __init__(self, num_latents: int, latent_dim: int):
        super().__init__()
        if num_latents < 1 or latent_dim < 1:
            raise ConfigError(f"{type(self).__name__}: num_latents and latent_dim must be >= 1, "
                              f"got {num_latents} and {latent_dim}.")
        self.num_latents, self.latent_dim = num_latents, latent_dim

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size((self.num_latents, self.latent_dim))

    def forward(self, context: torch.Tensor | None = None) -> TorchDistribution:
        raise NotImplementedError

    def bind_guide(self, guide: nn.Module) -> None:
        """Hook for priors defined through the guide's global parameters (the VampPrior reads the
        amortised guide's encoder). The run calls it once guide and prior exist; default: nothing."""

    def extra_repr(self) -> str:
        return f"num_latents={self.num_latents}, latent_dim={self.latent_dim}"
