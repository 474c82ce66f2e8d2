"""The Latent Thought Model as a Pyro program: z ~ prior, then tokens ~ decoder(z)."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from inference.sites import LATENT_SITE, SEQUENCE_PLATE, TOKEN_SITE
from ltm.config import DecoderConfig
from ltm.decoder import Decoder
from ltm.likelihood import TokenSequence
from priors.base import Prior


class LatentThoughtModel(nn.Module):
    """p(x, z) = p(z) prod_t p(x_t | x_<t, z), with z (N_z, D_z) per sequence.

    Layer l of the decoder cross-attends to its slice of z. `model(tokens)` is the Pyro model:
    under the plate "sequences", sample site "z" from the prior, then the observed site "tokens"
    scored by one fused cross-entropy. Swap the prior freely: nothing else changes.

    Args:
        decoder: A `Decoder` with n_latent > 0.
        prior: A `priors.Prior` whose event shape is (decoder n_latent, decoder d_latent).
    """

    def __init__(self, decoder: Decoder, prior: Prior):
        super().__init__()
        expected = (decoder.cfg.n_latent, decoder.cfg.d_latent)
        if tuple(prior.event_shape) != expected:
            raise ValueError(
                f"prior {type(prior).__name__} has event shape {tuple(prior.event_shape)} but the "
                f"decoder cross-attends to latents of shape {expected} (n_latent, d_latent); "
                f"build them with the same sizes.")
        self.decoder, self.prior = decoder, prior

    @classmethod
    def build(cls, cfg: DecoderConfig, prior: str | type = "standard_normal",
              **prior_kwargs) -> LatentThoughtModel:
        """Decoder from `cfg` plus a prior by registry name or `module:Class` path."""
        from priors import build_prior  # late: priors' registry imports ltm.registry

        if cfg.n_latent == 0:
            raise ValueError("a Latent Thought Model needs n_latent > 0 latent vectors.")
        return cls(Decoder(cfg), build_prior(prior, cfg.n_latent, cfg.d_latent, **prior_kwargs))

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over a batch of blocks `tokens` (B, T+1): predicts tokens[:, 1:].

        Returns:
            The sampled thoughts z (B, N, D).
        """
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            z = pyro.sample(LATENT_SITE, self.prior())  # (B, N, D)
            if tuple(z.shape[1:]) != tuple(self.prior.event_shape):
                raise ValueError(
                    f"site '{LATENT_SITE}' has shape {tuple(z.shape)} but the prior's event shape "
                    f"is {tuple(self.prior.event_shape)}; the guide must sample the same shape.")
            logits = self.decoder(inputs, latents=z)  # (B, T, V)
            pyro.sample(TOKEN_SITE, TokenSequence(logits), obs=targets)
        return z

    def forward(self, tokens: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) of `tokens` (B, T) given thoughts (B, N, D)."""
        return self.decoder(tokens, latents=latents)
