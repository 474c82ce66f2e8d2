"""The amortised guide: q(z | x) = N(mu_phi(x), diag sigma_phi(x)^2), an encoder read off the tokens."""

from __future__ import annotations

import torch

from ltm.inference.fixed_noise import normal
from ltm.inference.guides.base import LocalGuide
from ltm.inference.guides.encoder import SequenceEncoder


class AmortizedGuide(LocalGuide):
    """A VAE encoder over the block: no local tensors, so inner steps K change nothing.

    The encoder (`SequenceEncoder`) is a global module trained by the slow step: its parameters
    get the ELBO's gradient through q, as in a plain VAE. `fit_local` hands it the tokens of each
    batch at call time; in prefix-predictive scoring it reads the prefix only.

    Args:
        vocab_size: Token vocabulary V (the run passes it).
        num_latents: Latent vectors N (the run passes it).
        latent_dim: Latent width D (the run passes it).
        encoder_dim: Width E of the encoder's embedding and GRU.
    """

    def __init__(self, vocab_size: int, num_latents: int, latent_dim: int, encoder_dim: int = 64):
        super().__init__()
        self.encoder = SequenceEncoder(vocab_size, num_latents, latent_dim, encoder_dim)
        self.event_shape = (num_latents, latent_dim)

    @property
    def reads_noise(self) -> bool:
        return True  # the encoder's q reads a frozen draw, though it has no local tensors

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's (loc, log_scale), each (B, N, D), for the batch `tokens` (B, T+1)."""
        return self.encoder(tokens)

    def distribution(self, tokens, prior):
        loc, log_scale = self.encode(tokens)  # (B, N, D) each
        return normal(loc, log_scale.exp(), self.fixed_noise).to_event(2)
