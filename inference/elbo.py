"""The ELBO as Pyro computes it (`TraceMeanField_ELBO`), also split per sequence into its terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from ltm.inference.kl_split import kl_per_vector


@dataclass
class ElboTerms:
    """Per-sequence ELBO terms, each (B,), in nats; differentiable.

    Attributes:
        reconstruction: E_q[log p(x | z)] (single- or few-sample estimate).
        kl: KL(q || p): analytic where Pyro's registry has it, Monte Carlo otherwise.
        kl_per_latent: The KL split per latent vector (B, N) where q and p factorise over the
            vectors (`ltm.inference.kl_split`); None where they do not or there is no latent.
    """

    reconstruction: torch.Tensor
    kl: torch.Tensor
    kl_per_latent: torch.Tensor | None = None

    @property
    def elbo(self) -> torch.Tensor:
        return self.reconstruction - self.kl


def _per_sequence(value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sum a site's per-element term to (B,); a batch-free term is shared equally."""
    if value.dim() == 0:
        return value.expand(batch_size) / batch_size
    return value.reshape(batch_size, -1).sum(-1)


class LatentELBO(TraceMeanField_ELBO):
    """Pyro's mean-field ELBO with a `terms` method giving reconstruction and KL per sequence.

    `terms(...)` runs the same traces and the same KL rules as `differentiable_loss`, so
    `-terms(...).elbo.sum()` equals `differentiable_loss(...)` for the same noise draw.

    `max_plate_nesting` defaults to 1 (ltm's models have the one plate "sequences"): left unset,
    Pyro would guess it by running model and guide once more on a new loss object's first call,
    an extra forward pass on every fresh inner loop. Pass a larger value for nested plates.
    """

    def __init__(self, *, max_plate_nesting: int = 1, **kwargs):
        super().__init__(max_plate_nesting=max_plate_nesting, **kwargs)

    def terms(self, model, guide, *args, **kwargs) -> ElboTerms:
        """Per-sequence reconstruction and KL, averaged over `num_particles` draws."""
        tokens = args[0]
        zeros = torch.zeros(tokens.shape[0], device=tokens.device)  # (B,)
        recon, kl, split = zeros, zeros, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            r, k, s = self._particle_terms(model_trace, guide_trace, tokens.shape[0])
            recon = recon + r / self.num_particles
            kl = kl + k / self.num_particles
            split = None if s is None or split is None else split + s / self.num_particles
        return ElboTerms(recon, kl, split)

    @staticmethod
    def _particle_terms(model_trace, guide_trace, batch: int):
        """Reconstruction (B,), KL (B,) and the KL per latent vector (B, N) (None if it does not
        split, or if there is no latent site) of one particle."""
        recon = kl = 0.0
        split, latents = None, 0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                recon = recon + _per_sequence(site["log_prob"], batch)
                continue
            q_site = guide_trace.nodes[name]
            latents += 1
            split = kl_per_vector(q_site["fn"], site["fn"], site["value"])  # (B, N) or None
            try:
                kl_site = kl_divergence(q_site["fn"], site["fn"])
                kl_site = scale_and_mask(kl_site, scale=q_site["scale"], mask=q_site["mask"])
            except NotImplementedError:
                kl_site = q_site["score_parts"].entropy_term - site["log_prob"]
            kl = kl + _per_sequence(kl_site, batch)
        return recon, kl, split if latents == 1 else None
