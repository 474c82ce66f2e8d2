"""The Latent Thought Model (family "ltm") as a Pyro program: z ~ prior, then tokens ~ decoder(z)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyro
import torch

from ltm.core.errors import ConfigError
from ltm.core.loss_mask import split_block
from ltm.core.sites import LATENT_SITE, SEQUENCE_PLATE, TOKEN_SITE
from ltm.models.config import DecoderConfig
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState, Family
from ltm.models.likelihood import TokenSequence
from ltm.priors import Prior, build_prior

DEFAULT_PRIOR = "standard_normal"  # the paper's N(0, I)


@dataclass
class LTMOptions:
    """The `ltm` config section.

    Attributes:
        n_latent: Latent thought vectors N_z per sequence, split evenly over the layers.
        d_latent: Width of each latent vector (None: d_model).
    """

    n_latent: int = 4
    d_latent: int | None = 32


class LatentThoughtModel(Family):
    """p(x, z) = p(z) prod_t p(x_t | x_<t, z), with z (N_z, D_z) per sequence.

    Layer l of the decoder cross-attends to its slice of z. `model(tokens)` is the Pyro model:
    under the plate "sequences", sample site "z" from the prior, then the observed site "tokens"
    scored by one fused cross-entropy. Swap the prior freely: nothing else changes.

    Args:
        decoder: A `Decoder` with n_latent > 0.
        prior: An `ltm.priors.Prior` whose event shape is (decoder n_latent, decoder d_latent).
    """

    name = "ltm"
    Options = LTMOptions
    default_guide = "gaussian"
    exact_nll = False
    sequence_latent = True
    takes_prior = True

    def __init__(self, decoder: Decoder, prior: Prior):
        super().__init__()
        expected = (decoder.cfg.n_latent, decoder.cfg.d_latent)
        if tuple(prior.event_shape) != expected:
            raise ConfigError(
                f"prior {type(prior).__name__} has event shape {tuple(prior.event_shape)} but the "
                f"decoder cross-attends to latents of shape {expected} (n_latent, d_latent); "
                f"build them with the same sizes.")
        self.decoder, self.prior = decoder, prior

    @classmethod
    def build(cls, cfg: DecoderConfig, prior: str | type = DEFAULT_PRIOR,
              **prior_kwargs) -> LatentThoughtModel:
        """Decoder from `cfg` (with n_latent > 0) plus a prior by registry name or `module:Class` path."""
        if cfg.n_latent == 0:
            raise ConfigError("a Latent Thought Model needs n_latent > 0 latent vectors.")
        try:
            prior_module = build_prior(prior, cfg.n_latent, cfg.d_latent, **prior_kwargs)
        except TypeError as err:  # a prior that does not take the given keyword arguments
            raise ConfigError(f"cannot build prior '{prior}' with prior_kwargs {prior_kwargs}: "
                              f"{err}.") from None
        return cls(Decoder(cfg), prior_module)

    @classmethod
    def from_config(cls, decoder: DecoderConfig, options: LTMOptions | None = None,
                    prior: str | type | None = None, prior_kwargs: dict | None = None
                    ) -> LatentThoughtModel:
        options = options or LTMOptions()
        cfg = dataclasses.replace(decoder, n_latent=options.n_latent, d_latent=options.d_latent)
        return cls.build(cfg, prior or DEFAULT_PRIOR, **(prior_kwargs or {}))

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over a batch of blocks `tokens` (B, T+1): predicts tokens[:, 1:].

        Returns:
            The sampled thoughts z (B, N, D).
        """
        inputs, targets = split_block(tokens)  # (B, T) each
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            z = pyro.sample(LATENT_SITE, self.prior())  # (B, N, D)
            if tuple(z.shape[1:]) != tuple(self.prior.event_shape):
                raise ValueError(
                    f"site '{LATENT_SITE}' has shape {tuple(z.shape)} but the prior's event shape "
                    f"is {tuple(self.prior.event_shape)}; the guide must sample the same shape.")
            h = self.decoder.hidden_states(inputs, latents=z)  # (B, T, D)
            pyro.sample(TOKEN_SITE, TokenSequence.from_hidden(h, self.decoder.head_weight),
                        obs=targets)
        return z

    def full_logits(self, tokens: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(tokens, latents=latents)  # (B, T, V); the decoder checks the shape

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, max_len: int | None = None,
                latents: torch.Tensor | None = None) -> tuple[torch.Tensor, DecodeState]:
        cache = self.decoder.new_cache(tokens.shape[0], max_len)
        logits = self.decoder(tokens, latents=latents, cache=cache)[:, -1]  # (B, V)
        return logits, DecodeState(cache, tokens.shape[1], latents)

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        logits = self.decoder(token[:, None], latents=state.latents, cache=state.cache)[:, -1]  # (B, V)
        state.position += 1
        return logits, state
