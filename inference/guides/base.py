"""The guide contract: per-sequence local posteriors whose tensors are fresh for every batch."""

from __future__ import annotations

import functools

import pyro
import torch
from torch import nn

from ltm.core.errors import ConfigError
from ltm.core.protocols import ModelFamily
from ltm.core.sites import LATENT_SITE, SEQUENCE_PLATE
from ltm.inference.fixed_noise import standard_noise
from ltm.priors.base import Prior


class LocalGuide(nn.Module):
    """Base class of guides over the sequence-level site "z".

    A guide is called as Pyro calls a guide, with the model's argument, the batch's tokens
    (B, T+1), and with the model's prior: `guide(tokens, prior)` samples "z" under the sequence
    plate. Pyro's ELBOs pass the model's arguments only, so they get `pyro_guide(guide, prior)`.

    Per-batch state is the local tensors and nothing else of the batch: `reset(prior, tokens)`
    makes `locals` afresh (plain tensors, never Pyro params or module parameters: the fast inner
    loop optimises exactly `local_parameters()`), and `freeze_noise` may store one noise draw for
    the batch (`fixed_noise`). Global parameters (amortised guides) are ordinary `nn.Parameter`s
    trained by the slow step.

    Subclasses implement `init_locals` and `distribution`.

    Attributes:
        fits_degenerate_prior: True only for guides that are valid under a point-mass prior.
        starts_from_model: True for guides that start from the model family's own point guess of
            the thoughts (`Family.initial_latents(tokens)`), passed to `reset` as `start`.
        has_density: False for guides whose q has no tractable density over z (a point mass on
            continuous z, or Langevin samples): the ELBO and the importance-weighted bound need
            log q(z), so they are refused for such guides; prefix-predictive scores stay sound.
        event_shape: The thought shape (N, D) a guide with global parameters was built for
            (checked against the prior's); None for guides sized by the prior at `reset`.
        unroll: True for guides whose training fit is differentiated through: the inner loop
            starts from `attach_locals(tokens)` and steps by plain gradient descent with
            `create_graph`, and the slow step does not detach the result.
    """

    fits_degenerate_prior: bool = False
    starts_from_model: bool = False
    has_density: bool = True
    event_shape: tuple[int, int] | None = None
    unroll: bool = False

    def __init__(self):
        super().__init__()
        self.locals: dict[str, torch.Tensor] = {}  # the batch's local tensors (`reset`)
        self.fixed_noise: torch.Tensor | None = None  # the batch's frozen draw (`freeze_noise`)

    def reset(self, prior: Prior, tokens: torch.Tensor, start: torch.Tensor | None = None) -> None:
        """Start a new batch: fresh local tensors for the sequences of `tokens`, no frozen noise.

        Args:
            prior: The model's prior (sizes the tensors and places them on its device).
            tokens: The batch's token ids (B, T+1) the posterior is fitted to.
            start: The model's point guess of the thoughts (B, *event_shape), for guides with
                `starts_from_model`; others ignore it.
        """
        check_guide_fits_prior(self, prior)
        self.fixed_noise = None
        device = prior_device(prior)
        self.locals = {name: t.detach().to(device).clone().requires_grad_(True)
                       for name, t in self.init_locals(prior, tokens, start).items()}

    def init_locals(self, prior: Prior, tokens: torch.Tensor,
                    start: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Initial local tensors for a batch `tokens` (B, T+1) (the base guide has none)."""
        return {}

    def local(self, name: str) -> torch.Tensor:
        """The local tensor `name` of the current batch."""
        if name not in self.locals:
            raise RuntimeError(f"{type(self).__name__} has no local tensors for this batch: call "
                               f"reset(prior, tokens) first (fit_local does).")
        return self.locals[name]

    def attach_locals(self, tokens: torch.Tensor) -> None:
        """Replace the local tensors by differentiable functions of the guide's global parameters
        (for `unroll`); guides without such globals do not unroll."""
        raise NotImplementedError(f"{type(self).__name__} has no global parameters to unroll into.")

    def local_parameters(self) -> list[torch.Tensor]:
        """The tensors the fast inner loop optimises."""
        return list(self.locals.values())

    def natural_gradient(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The gradients of the local tensors, by name, preconditioned by the inverse Fisher
        information of q (the fast optimiser "natgrad" steps along them). The base guide knows no
        Fisher: it returns the plain gradients."""
        return grads

    def sample_locals(self, energy, steps: int, prior: Prior) -> list[float] | None:
        """Move the local tensors by a sampler of this guide's own (e.g. Langevin dynamics) instead
        of the fast optimiser; None (the default) lets the inner loop optimise them.

        Args:
            energy: A callable returning -log p(x, z) per sequence (B,) at the current locals
                (for a point-mass q at z: the negative ELBO, which is then -log p(x, z)).
            steps: Inner steps K.
            prior: The model's prior.

        Returns:
            The summed energy before each step, or None when the guide has no sampler.
        """
        return None

    def slow_step_loss(self, family: ModelFamily, tokens: torch.Tensor, elbo) -> torch.Tensor | None:
        """A loss (nats summed over the batch) for the guide's global parameters alone, which the
        slow step adds to its own (e.g. a semi-amortised encoder trained on the ELBO at its own
        output); None: the guide's globals, if any, learn from the slow step's ELBO directly."""
        return None

    def detach_locals(self) -> None:
        """Freeze the fitted local tensors (the slow step treats them as constants)."""
        self.locals = {name: t.detach() for name, t in self.locals.items()}

    def freeze_noise(self, prior: Prior, tokens: torch.Tensor, noise: torch.Tensor | None = None) -> None:
        """Reuse one noise draw (B, N, D) for the batch `tokens` in every later call until the next
        `reset`.

        Args:
            noise: The draw to reuse (e.g. made from per-sequence generators); default: a fresh
                standard-normal draw (`ltm.inference.fixed_noise.standard_noise`).
        """
        if not self.reads_noise:
            return
        shape = (tokens.shape[0],) + tuple(prior.event_shape)  # (B, N, D)
        device = prior_device(prior)
        if noise is None:
            noise = standard_noise(shape, device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise of shape {tuple(noise.shape)} given; this batch needs {shape}.")
        self.fixed_noise = noise.to(device)

    @property
    def reads_noise(self) -> bool:
        """Whether `distribution` reads `fixed_noise` (default: guides with local tensors)."""
        return bool(self.locals)

    def distribution(self, tokens: torch.Tensor, prior: Prior) -> pyro.distributions.TorchDistribution:
        """q(z) for the batch `tokens` (B, T+1): batch shape (B,) and event shape (N, D)."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, prior: Prior) -> torch.Tensor:
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            return pyro.sample(LATENT_SITE, self.distribution(tokens, prior))


def pyro_guide(guide: LocalGuide, prior: Prior):
    """The guide as Pyro's ELBOs and `poutine.trace` call it, with the model's arguments only
    (`tokens`): `guide(tokens, prior)` with the model's prior bound."""
    return functools.partial(guide, prior=prior)


def check_guide_fits_prior(guide: LocalGuide, prior: Prior) -> None:
    """Refuse a point-mass prior paired with a guide that is not the prior itself, and a guide
    built for another thought shape than the prior's."""
    if guide.event_shape is not None and tuple(guide.event_shape) != tuple(prior.event_shape):
        raise ConfigError(
            f"guide {type(guide).__name__} was built for thoughts of shape "
            f"{tuple(guide.event_shape)} but the prior {type(prior).__name__} has event shape "
            f"{tuple(prior.event_shape)}; build the guide with the prior's num_latents and "
            f"latent_dim.")
    if prior.is_degenerate and not guide.fits_degenerate_prior:
        fix = ("the empty guide (guide='none'): its thoughts are deterministic" if prior.token_level
               else "the prior guide (guide='prior', q = p)")
        raise ConfigError(
            f"prior {type(prior).__name__} is degenerate (a point mass), so guide "
            f"{type(guide).__name__} would score log 0 = -inf; use {fix}.")


def prior_device(prior: Prior) -> torch.device:
    """The device of a prior's parameters or buffers (CPU for a prior with neither)."""
    ref = next(iter(prior.parameters()), None)
    ref = ref if ref is not None else next(iter(prior.buffers()), None)
    return ref.device if ref is not None else torch.device("cpu")


def initial_loc(prior: Prior, batch_size: int, init_loc: float | str) -> torch.Tensor:
    """Starting means (B, N, D): a constant, or "prior_mean" (zero where the prior has no mean)."""
    shape = (batch_size,) + tuple(prior.event_shape)
    device = prior_device(prior)
    if init_loc == "prior_mean":
        try:
            mean = prior().mean.detach()
        except NotImplementedError:
            mean = torch.zeros(prior.event_shape, device=device)
        return mean.expand(shape).clone()
    return torch.full(shape, float(init_loc), device=device)
