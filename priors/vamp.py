"""The VampPrior (Tomczak & Welling 2018): a mixture of the amortised posterior at learned pseudo-inputs."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ltm.core.errors import ConfigError
from ltm.priors.base import Prior
from ltm.priors.mixture import diagonal_mixture


class VampPrior(Prior):
    """p(z) = (1/C) sum_c q_phi(z | u_c): the guide's encoder q_phi applied to C learned
    pseudo-inputs u_c, each a sequence of `pseudo_len` continuous input embeddings.

    Tokens are discrete, so the pseudo-inputs live in the encoder's embedding space (its
    `encode_embeddings`). The encoder belongs to the amortised guide and is trained with it; the
    prior holds it by reference (`bind_guide`, which the run calls), so the checkpoint saves it
    once, with the guide. The pseudo-inputs are the prior's own parameters. The KL to a Gaussian
    guide has no closed form: the ELBO estimates it by Monte Carlo.

    Args:
        num_pseudo: Pseudo-inputs C (mixture components).
        pseudo_len: Length of each pseudo-input sequence.
        pseudo_dim: Width of the pseudo-inputs: the encoder's width (`encoder_dim` of the guide).
    """

    def __init__(self, num_latents: int, latent_dim: int, num_pseudo: int = 16, pseudo_len: int = 8,
                 pseudo_dim: int = 64):
        super().__init__(num_latents, latent_dim)
        if min(num_pseudo, pseudo_len, pseudo_dim) < 1:
            raise ConfigError(f"VampPrior: num_pseudo, pseudo_len and pseudo_dim must be >= 1, got "
                              f"{num_pseudo}, {pseudo_len}, {pseudo_dim}.")
        self.pseudo_inputs = nn.Parameter(torch.randn(num_pseudo, pseudo_len, pseudo_dim))  # (C, L, E)
        self.encoder: list[nn.Module] = []  # the guide's encoder, held by reference

    def bind_guide(self, guide: nn.Module) -> None:
        """Use `guide.encoder` (an amortised guide's `SequenceEncoder`) for the mixture components."""
        encoder = getattr(guide, "encoder", None)
        if encoder is None or not hasattr(encoder, "encode_embeddings"):
            raise ConfigError(f"the vamp prior is a mixture of the amortised posterior at "
                              f"pseudo-inputs, so it needs guide 'amortized' or 'semi_amortized', "
                              f"not {type(guide).__name__}.")
        width = self.pseudo_inputs.shape[-1]
        if encoder.dim != width:
            raise ConfigError(f"the vamp prior's pseudo-inputs have width {width} but the guide's "
                              f"encoder has width {encoder.dim}; set the prior's pseudo_dim to the "
                              f"guide's encoder_dim.")
        self.encoder = [encoder]

    def forward(self, context=None) -> dist.TorchDistribution:
        if not self.encoder:
            raise RuntimeError("the vamp prior has no encoder yet: call prior.bind_guide(guide) with "
                               "an amortized or semi_amortized guide (training, sampling and loading "
                               "a checkpoint do this).")
        loc, log_scale = self.encoder[0].encode_embeddings(self.pseudo_inputs)  # (C, N, D) each
        logits = torch.zeros(loc.shape[0], device=loc.device)  # (C,) equal weights
        return diagonal_mixture(loc.flatten(1), log_scale.exp().flatten(1), logits,
                                self.event_shape)
