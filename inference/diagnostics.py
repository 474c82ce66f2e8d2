"""Is the latent used? KL per latent vector, active units and mutual information on held-out text.

All three come from q(z | x) fitted with K inner steps on each held-out block (`fit_posterior`):

- **KL per latent vector**: KL(q(z_i | x) || p(z_i)) averaged over sequences, in nats per sequence
  (`ltm.inference.kl_split`; absent for priors that couple the vectors).
- **Active units** (Burda et al. 2016): coordinates of z whose posterior mean moves with the data,
  Cov_x(E_q[z | x]) > threshold (0.01).
- **Mutual information** I(x; z) under the aggregate posterior q(z) = mean_x q(z | x) (Hoffman &
  Johnson 2016, estimated as in He et al. 2019): mean_i [log q(z_i | x_i) - log q(z_i)], z_i ~
  q(z | x_i), with log q(z_i) = logsumexp_j log q(z_i | x_j) - log M over the M held-out
  sequences. The estimate is at most log M nats.

A model whose q stays at the prior has zero KL, no active unit and zero mutual information.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from pyro import poutine

from ltm.core.protocols import ModelFamily
from ltm.core.sites import LATENT_SITE
from ltm.inference import data_parallel
from ltm.inference.data_parallel import counted, gather, local_batches
from ltm.inference.guides.base import LocalGuide, pyro_guide
from ltm.inference.inner_loop import InnerLoopConfig
from ltm.inference.kl_split import kl_per_vector
from ltm.inference.posterior_fit import evaluation_mode, fit_posterior

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class PosteriorDiagnostics:
    """What the fitted posteriors say about latent use (nats per sequence where a unit applies).

    Attributes:
        inner_steps: K used to fit q.
        kl_per_latent: Mean KL of each latent vector (N values), or None where it does not split.
        active_units: Coordinates whose posterior mean varies across sequences above `threshold`.
        units: All coordinates N * D.
        mutual_info: Estimated I(x; z) in nats (at most log `sequences`).
        sequences: Held-out sequences M.
        threshold: The active-unit variance threshold.
    """

    inner_steps: int
    kl_per_latent: list[float] | None
    active_units: int
    units: int
    mutual_info: float
    sequences: int
    threshold: float = ACTIVE_UNIT_THRESHOLD

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: KL per latent, active units, mutual information."""
        kl = ("n/a" if self.kl_per_latent is None
              else "[" + ", ".join(f"{v:.3f}" for v in self.kl_per_latent) + "]")
        return (f"KL per latent vector {kl} nats/seq, active units {self.active_units}/{self.units}, "
                f"mutual information {self.mutual_info:.3f} nats (K={self.inner_steps}, "
                f"{self.sequences} sequences)")


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Coordinates whose mean over sequences varies: means (M, ...) -> count of Var_M > threshold."""
    if means.shape[0] < 2:
        return 0
    return int((means.flatten(1).var(0) > threshold).sum())


def mutual_information(posteriors: list, draws: torch.Tensor) -> float:
    """He et al. (2019)'s estimate of I(x; z) from M posteriors and one draw from each.

    Args:
        posteriors: Distributions q(z | x_j), each with batch shape (B_j,), sum B_j = M.
        draws: z_i ~ q(z | x_i), (M, N, D) in the same order.
    """
    log_q = torch.cat([q.log_prob(draws[:, None]) for q in posteriors], dim=1)  # (M, M): [i, j]
    return information_from(log_q)


def information_from(log_q: torch.Tensor) -> float:
    """The estimate from log q(z_i | x_j) (M, M), row i a draw, column j a posterior."""
    own = log_q.diagonal()  # (M,) log q(z_i | x_i)
    aggregate = log_q.logsumexp(1) - math.log(log_q.shape[0])  # (M,) log q(z_i)
    return float((own - aggregate).mean().detach())


def diagnostics_skipped(family: ModelFamily, guide: LocalGuide) -> str | None:
    """Why the posterior diagnostics do not apply to this family and guide, or None if they do."""
    if family.exact_nll or not family.sequence_latent:
        return "the model has no stochastic sequence-level latent"
    if family.prior.is_degenerate:
        return ("the prior is a point mass, so q = p: the KL is 0, no unit is active and the mutual "
                "information is 0 by construction")
    if not guide.has_density:
        return f"guide {type(guide).__name__} has no density, and KL and mutual information need log q(z)"
    return None


def posterior_diagnostics(family: ModelFamily, guide: LocalGuide, tokens, inner: InnerLoopConfig,
                          seed: int = 0, threshold: float = ACTIVE_UNIT_THRESHOLD
                          ) -> PosteriorDiagnostics | None:
    """Fit q on each held-out block (B, T+1) with `inner`, then KL per latent, active units and MI.

    Returns:
        The diagnostics, or None where they do not apply (`diagnostics_skipped` says why): a family
        without a stochastic sequence-level latent (exact NLL, or token-level thoughts whose prior
        depends on their context), a point-mass prior, or a guide without a density
        (`has_density` False, e.g. MAP or Langevin; or `distribution` not implemented, e.g. the
        empty guide): KL and mutual information need log q(z).
    """
    if diagnostics_skipped(family, guide) is not None:
        return None
    posteriors, means, draws, kls = [], [], [], []
    with evaluation_mode(family, seed) as device, torch.no_grad():
        for batch in local_batches(tokens, device):
            fit_posterior(family, guide, batch, inner)
            try:  # drawn at the latent site, so that under several processes the noise is sharded
                site = poutine.trace(pyro_guide(guide, family.prior)).get_trace(batch).nodes[LATENT_SITE]
            except NotImplementedError:
                return None
            if not counted(batch):
                continue
            q, z = site["fn"], site["value"]  # batch (B,), event (N, D); (B, N, D)
            prior = family.prior().expand((batch.shape[0],))
            kls.append(kl_per_vector(q, prior, z))  # (B, N) or None
            posteriors.append(q)
            means.append(q.mean)  # (B, N, D)
            draws.append(z)
    if data_parallel.active():  # several processes: each holds its rows of every batch
        return _gathered(inner, posteriors, means, draws, kls, threshold)
    means, draws = torch.cat(means), torch.cat(draws)  # (M, N, D) each
    per_latent = None if any(k is None for k in kls) else torch.cat(kls).mean(0).tolist()
    return PosteriorDiagnostics(inner.steps, per_latent, active_units(means, threshold),
                                means[0].numel(), mutual_information(posteriors, draws),
                                means.shape[0], threshold)


def _gathered(inner, posteriors, means, draws, kls, threshold) -> PosteriorDiagnostics:
    """The diagnostics of every process's sequences (`ltm.inference.data_parallel`): means, draws
    and KLs gathered; each process scores every draw under its own posteriors, columns gathered."""
    device = means[0].device if means else torch.device("cpu")
    empty = torch.zeros(0)
    mine = [torch.cat(x) if x else empty for x in (means, draws)]
    kl_split = not any(k is None for k in kls)
    parts = gather((*mine, torch.cat(kls) if kl_split and kls else empty, kl_split))
    means, draws = (torch.cat([p[i] for p in parts if p[i].numel()]).to(device) for i in (0, 1))
    per_latent = None
    if all(p[3] for p in parts):
        per_latent = torch.cat([p[2] for p in parts if p[2].numel()]).mean(0).tolist()  # (N,)
    columns = [q.log_prob(draws[:, None]) for q in posteriors]  # each (M, B_j)
    log_q = torch.cat([c for p in gather(columns) for c in p], dim=1).to(device)  # (M, M): [i, j]
    return PosteriorDiagnostics(inner.steps, per_latent, active_units(means, threshold),
                                means[0].numel(), information_from(log_q), means.shape[0], threshold)
