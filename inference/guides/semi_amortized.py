"""The semi-amortised guide (Kim et al. 2018): an encoder starts the local Gaussian, K steps refine it."""

from __future__ import annotations

import torch

from ltm.core.protocols import ModelFamily
from ltm.inference.fixed_noise import normal
from ltm.inference.guides.amortized import AmortizedGuide
from ltm.inference.guides.base import pyro_guide
from ltm.inference.guides.gaussian import gaussian_natural_gradient


class SemiAmortizedGuide(AmortizedGuide):
    """q(z | x) = N(loc, diag scale^2), with (loc, log scale) started at the encoder's output for
    the batch and refined per sequence by the fast inner loop.

    How the encoder learns:
      - `unroll=False` (default): the gradient stops at the refined parameters. The slow step
        trains the decoder on the ELBO at the refined q, and the encoder on the ELBO at its own
        output (its gradient reaches the encoder alone): the encoder learns a good start.
      - `unroll=True`: the K fast steps run as plain gradient descent at the fast learning rate
        with `create_graph`, and the slow step backpropagates through them into the encoder
        (SA-VAE). Needs the fast optimiser "sgd"; costs K double-backward passes.

    Args:
        vocab_size, num_latents, latent_dim, encoder_dim: As `AmortizedGuide`.
        unroll: Backpropagate through the unrolled fast steps into the encoder.
    """

    def __init__(self, vocab_size: int, num_latents: int, latent_dim: int, encoder_dim: int = 64,
                 unroll: bool = False):
        super().__init__(vocab_size, num_latents, latent_dim, encoder_dim)
        self.unroll = bool(unroll)

    def init_locals(self, prior, tokens, start):
        with torch.no_grad():
            loc, log_scale = self.encode(tokens)  # (B, N, D) each
        return {"loc": loc, "log_scale": log_scale}

    def attach_locals(self, tokens) -> None:
        """Make the locals the encoder's live output (for a fit the slow step backpropagates through)."""
        loc, log_scale = self.encode(tokens)  # (B, N, D) each
        self.locals = {"loc": loc, "log_scale": log_scale}

    def natural_gradient(self, grads):
        return gaussian_natural_gradient(self.locals, grads)

    @property
    def reads_noise(self) -> bool:
        return bool(self.locals)

    def distribution(self, tokens, prior):
        return normal(self.local("loc"), self.local("log_scale").exp(), self.fixed_noise).to_event(2)

    def slow_step_loss(self, family: ModelFamily, tokens, elbo):
        """Without unrolling: the negative ELBO at the encoder's own output, whose gradient is
        routed to the encoder alone (a zero-valued surrogate carrying that gradient)."""
        if self.unroll:
            return None
        fitted = self.locals
        self.attach_locals(tokens)
        try:
            loss = elbo.differentiable_loss(family.model, pyro_guide(self, family.prior), tokens)
        finally:
            self.locals = fitted
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
        surrogate = sum((p * g.detach()).sum() for p, g in zip(params, grads, strict=True))
        return surrogate - surrogate.detach()
