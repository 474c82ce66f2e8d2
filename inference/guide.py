"""The guide contract: per-sequence local posteriors whose tensors are fresh for every batch."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from inference.sites import LATENT_SITE, SEQUENCE_PLATE
from priors.base import Prior


class LocalGuide(nn.Module):
    """Base class of guides over the sequence-level site "z".

    A guide samples the model's latent site under the same plate. Its per-sequence (local)
    parameters are plain tensors made afresh by `reset` for each batch, never Pyro global params
    and never module parameters: the fast inner loop optimises exactly `local_parameters()`.
    Global parameters (amortised guides) are ordinary `nn.Parameter`s trained by the slow step.

    Subclasses implement `init_locals` and `distribution`.

    Attributes:
        fits_degenerate_prior: True only for guides that are valid under a point-mass prior.
    """

    fits_degenerate_prior: bool = False

    def __init__(self):
        super().__init__()
        self.locals: dict[str, torch.Tensor] = {}
        self.prior: list[Prior] = []  # held in a list so the prior is not a submodule of the guide
        self.fixed_noise: torch.Tensor | None = None

    def reset(self, prior: Prior, batch_size: int, tokens: torch.Tensor | None = None) -> None:
        """Start a new batch: fresh local tensors for `batch_size` sequences, fresh noise."""
        check_guide_fits_prior(self, prior)
        self.prior = [prior]
        self.fixed_noise = None
        self.locals = {name: t.detach().clone().requires_grad_(True)
                       for name, t in self.init_locals(prior, batch_size, tokens).items()}

    def init_locals(self, prior: Prior, batch_size: int, tokens) -> dict[str, torch.Tensor]:
        """Initial local tensors for a batch (the base guide has none)."""
        return {}

    def local_parameters(self) -> list[torch.Tensor]:
        """The tensors the fast inner loop optimises."""
        return list(self.locals.values())

    def detach_locals(self) -> None:
        """Freeze the fitted local tensors (the slow step treats them as constants)."""
        self.locals = {name: t.detach() for name, t in self.locals.items()}

    def freeze_noise(self, noise: torch.Tensor | None = None) -> None:
        """Reuse one noise draw (B, N, D) in every later call until the next `reset`.

        Args:
            noise: The draw to reuse (e.g. made from per-sequence generators); default: a fresh
                standard-normal draw from the global RNG.
        """
        if self.locals:
            ref = next(iter(self.locals.values()))  # (B, N, D)
            self.fixed_noise = torch.randn_like(ref) if noise is None else noise.to(ref)

    def distribution(self) -> pyro.distributions.TorchDistribution:
        """q(z) for the current batch, batch shape (B,) and event shape (N, D)."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.prior:
            raise RuntimeError(f"{type(self).__name__}: call reset(prior, batch_size) before use.")
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            return pyro.sample(LATENT_SITE, self.distribution())


def check_guide_fits_prior(guide: LocalGuide, prior: Prior) -> None:
    """Refuse a point-mass prior paired with a guide that is not the prior itself."""
    if prior.is_degenerate and not guide.fits_degenerate_prior:
        raise ValueError(
            f"prior {type(prior).__name__} is degenerate (a point mass), so guide "
            f"{type(guide).__name__} would score log 0 = -inf; use the prior guide "
            f"(guide='prior', q = p) with a degenerate prior.")


def initial_loc(prior: Prior, batch_size: int, init_loc: float | str) -> torch.Tensor:
    """Starting means (B, N, D): a constant, or "prior_mean" (zero where the prior has no mean)."""
    ref = next(iter(prior.buffers()), None)
    ref = ref if ref is not None else next(iter(prior.parameters()), torch.zeros(()))
    shape = (batch_size,) + tuple(prior.event_shape)
    if init_loc == "prior_mean":
        try:
            mean = prior().mean.detach()
        except NotImplementedError:
            mean = torch.zeros(prior.event_shape, device=ref.device)
        return mean.expand(shape).clone()
    return torch.full(shape, float(init_loc), device=ref.device, dtype=ref.dtype)
