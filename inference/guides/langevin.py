"""Short-run Langevin dynamics as the posterior: K steps of ULA (or MALA) on U(z) = -log p(x, z)."""

from __future__ import annotations

import hashlib
import math

import pyro.distributions as dist
import torch

from ltm.core.errors import ConfigError, DivergedError
from ltm.inference.guides.base import LocalGuide, initial_loc

INITS = ("prior", "prior_mean")


class LangevinGuide(LocalGuide):
    """q = the law of z after K Langevin steps on U(z) = -log p(x, z), one chain per sequence.

    From a prior draw (or the prior mean), each inner step moves every sequence's z (B, N, D) to

        z' = z - eta * grad U(z) + sqrt(2 eta) * xi,   xi ~ N(0, I),

    the unadjusted Langevin algorithm (ULA: biased by O(eta)), or with `mala=True` accepts z' per
    sequence with probability min(1, exp(U(z) - U(z') + log r(z | z') - log r(z' | z))), r the
    Gaussian proposal above (MALA: p(z | x) is exactly stationary). Between steps q is a point mass
    at the current z; the law of the chain after K steps has no tractable density, so `has_density`
    is False: the ELBO and the importance-weighted bound (which need log q(z)) are refused, and
    prefix-predictive scores stay sound. The slow step trains the model on -log p(x, z) at the
    sample (the short-run-MCMC maximum-likelihood gradient); that number is not a bound.

    The fast optimiser's settings (lr, schedule) do not apply: the step size is the guide's own.
    Randomness comes from the global torch RNG, unless `freeze_noise` is given a draw (the
    sampler's per-row streams): then each row's start and steps come from a generator seeded by
    its own row of that draw, so a row's chain does not depend on its batch.

    Args:
        step_size: eta > 0, in units of z^2 (U is summed over a sequence's tokens).
        mala: Metropolis-adjust each step (MALA) instead of ULA.
        init: "prior" (a prior draw per sequence) or "prior_mean".

    Attributes:
        acceptance_rate: Fraction of proposals accepted over the last fit's steps and sequences
            (1.0 under ULA; None before any step).
    """

    has_density = False

    def __init__(self, step_size: float = 0.01, mala: bool = False, init: str = "prior"):
        super().__init__()
        try:
            eta = float(step_size)
        except (TypeError, ValueError):
            eta = math.nan
        if not (math.isfinite(eta) and eta > 0):
            raise ConfigError(f"LangevinGuide: step_size must be a finite number > 0, got {step_size!r}.")
        if init not in INITS:
            raise ConfigError(f"LangevinGuide: init must be one of {INITS}, got {init!r}.")
        self.step_size, self.mala, self.init = eta, bool(mala), init
        self.acceptance_rate: float | None = None
        self.generators: list[torch.Generator] = []  # per-row, set by `freeze_noise(noise)`

    def init_locals(self, prior, tokens, start):
        self.generators = []
        if self.init == "prior_mean":
            return {"z": initial_loc(prior, tokens.shape[0], "prior_mean")}  # (B, N, D)
        return {"z": prior().sample((tokens.shape[0],))}  # (B, N, D)

    def freeze_noise(self, prior, tokens, noise: torch.Tensor | None = None) -> None:
        """A chain needs fresh noise at every step, so no draw is reused. A given draw (B, N, D)
        instead seeds one generator per row (restarting that row's chain from its own prior draw);
        without one, the chain keeps to the global RNG."""
        if noise is None:
            return
        seeds = [_seed_of(row) for row in noise]
        z = self.local("z")  # (B, N, D)
        if self.init == "prior":
            rows = []
            for seed in seeds:
                with torch.random.fork_rng(devices=[z.device] if z.device.type == "cuda" else []):
                    torch.manual_seed(seed)
                    rows.append(prior().sample())  # (N, D)
            self.locals["z"] = torch.stack(rows).to(z).requires_grad_(True)  # (B, N, D)
        self.generators = [torch.Generator().manual_seed(s + 1) for s in seeds]

    def _randn(self, z: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise like z (B, N, D): per-row generators, or the global RNG."""
        if not self.generators:
            return torch.randn_like(z)
        return torch.stack([torch.randn(z.shape[1:], generator=g) for g in self.generators]).to(z)

    def _rand(self, u: torch.Tensor) -> torch.Tensor:
        """Uniform draws like u (B,): per-row generators, or the global RNG."""
        if not self.generators:
            return torch.rand_like(u)
        return torch.stack([torch.rand((), generator=g) for g in self.generators]).to(u)

    def distribution(self, tokens, prior):
        return dist.Delta(self.local("z"), event_dim=2)

    def _energy(self, energy, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U (B,) and grad U (B, N, D) at z; sequences are independent, so grad of the sum suffices."""
        self.locals["z"] = z.detach().requires_grad_(True)
        with torch.enable_grad():
            u = energy()  # (B,)
            (grad,) = torch.autograd.grad(u.sum(), self.locals["z"])
        return u.detach(), grad

    def _log_proposal(self, to: torch.Tensor, frm: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """log r(to | frm) up to a constant, per sequence (B,): N(frm - eta grad U(frm), 2 eta I)."""
        return -(to - frm + self.step_size * grad).square().sum((-2, -1)) / (4 * self.step_size)

    def sample_locals(self, energy, steps: int, prior) -> list[float]:
        """Run K Langevin steps from the current z; return the summed energy before each step.

        Raises:
            DivergedError: if U is not finite at the start, or (ULA) after a step.
        """
        eta = self.step_size
        z = self.locals["z"].detach()  # (B, N, D)
        u, grad = self._energy(energy, z)  # (B,), (B, N, D)
        before, accepted = [], 0.0
        for k in range(steps):
            value = u.sum().item()
            if not math.isfinite(value):
                raise DivergedError(f"Langevin step {k + 1}/{steps}: the energy -log p(x, z) is "
                                    f"{value}; lower the step size ({eta}).")
            before.append(value)
            proposal = z - eta * grad + math.sqrt(2 * eta) * self._randn(z)  # (B, N, D)
            if not self.mala:
                z = proposal
                if k + 1 < steps:  # the last state's energy is not needed
                    u, grad = self._energy(energy, z)
                accepted += 1.0
                continue
            u_new, grad_new = self._energy(energy, proposal)
            log_alpha = (u - u_new + self._log_proposal(z, proposal, grad_new)
                         - self._log_proposal(proposal, z, grad))  # (B,); NaN or -inf: reject
            accept = self._rand(u).log() < log_alpha  # (B,)
            z = torch.where(accept[:, None, None], proposal, z)  # (B, N, D)
            u = torch.where(accept, u_new, u)
            grad = torch.where(accept[:, None, None], grad_new, grad)
            accepted += accept.float().mean().item()
        self.locals["z"] = z.detach().requires_grad_(True)
        self.acceptance_rate = accepted / steps if steps else None
        return before


def _seed_of(row: torch.Tensor) -> int:
    """A seed determined by the values of one row of noise (N, D)."""
    digest = hashlib.sha256(row.detach().float().cpu().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63
