"""The flow guide: a local diagonal Gaussian per sequence pushed through a normalising flow."""

from __future__ import annotations

import math

import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.score_parts import ScoreParts
from torch.distributions import kl_divergence

from ltm.core.errors import ConfigError
from ltm.inference.fixed_noise import normal
from ltm.inference.guides.base import LocalGuide, initial_loc, prior_device
from ltm.priors.flow import (
    FlowDistribution,
    build_flow,
    check_flow,
    flow_distribution,
    flow_modules,
    flow_width,
)

FLOW_PARAMS = ("shared", "per_sequence")


class FlowGuide(LocalGuide):
    """q(z_i) = T_i#N(loc_i, diag(scale_i^2)): loc_i, log scale_i fitted per sequence by the inner loop.

    The flow's layers run in the sampling direction (inverse-autoregressive for
    "affine_autoregressive"), so a draw and the density of that draw take one pass each. The flow
    starts near the identity, so with the defaults q starts at the prior N(0, I). The KL to the
    prior has no closed form: the ELBO estimates it by Monte Carlo, by default with the base
    Gaussian's analytic KL as control variate where the prior has one (`ControlledFlow`), so an
    identity flow gives exactly the local Gaussian guide's ELBO.

    Args:
        num_latents: Latent vectors N (the run passes it).
        latent_dim: Latent width D (the run passes it).
        kind: "affine_autoregressive" or "spline_coupling" (see `ltm.priors.flow.build_flow`).
        num_flows: Flow layers (>= 1).
        hidden_dims: Hidden widths of each layer's network (default [3 * width + 1]).
        over: "vector" (the flow acts on each latent vector's D coordinates, shared by the N
            vectors) or "block" (on the flattened N*D block).
        flow_params: "shared": one flow for every sequence, its parameters global (trained by
            the slow step). "per_sequence": each sequence's own flow, from Pyro's conditional
            layers whose hypernetworks (global) read a local context (B, context_dim) fitted by
            the inner loop together with loc and log_scale.
        context_dim: Width C of the per-sequence context.
        init_scale: Starting scale of the base Gaussian (1.0: start at the prior).
        init_loc: Starting base mean: a constant or "prior_mean".
        control_variate: Use the base's analytic KL as control variate of the Monte-Carlo KL
            (False: the plain one-sample estimate log q(z) - log p(z)).
        transforms: Your own Pyro transforms (sampling direction, on the width `over` gives;
            conditional ones with "per_sequence"); replaces `kind`, `num_flows`, `hidden_dims`.
    """

    def __init__(self, num_latents: int, latent_dim: int, kind: str = "affine_autoregressive",
                 num_flows: int = 2, hidden_dims: list[int] | None = None, over: str = "vector",
                 flow_params: str = "shared", context_dim: int = 8, init_scale: float = 1.0,
                 init_loc: float | str = 0.0, control_variate: bool = True,
                 transforms: list | None = None):
        super().__init__()
        if flow_params not in FLOW_PARAMS:
            raise ConfigError(f"FlowGuide: unknown flow_params '{flow_params}'; choose one of "
                              f"{list(FLOW_PARAMS)}.")
        if init_scale <= 0:
            raise ConfigError(f"FlowGuide: init_scale must be > 0, got {init_scale}.")
        if flow_params == "per_sequence" and (not isinstance(context_dim, int) or context_dim < 1):
            raise ConfigError(f"FlowGuide: context_dim must be an integer >= 1, got {context_dim!r}.")
        if num_latents < 1 or latent_dim < 1:
            raise ConfigError(f"FlowGuide: num_latents and latent_dim must be >= 1, got "
                              f"{num_latents} and {latent_dim}.")
        self.event_shape = (num_latents, latent_dim)
        self.kind, self.over, self.flow_params = kind, over, flow_params
        self.init_scale, self.init_loc, self.control_variate = init_scale, init_loc, control_variate
        self.context_dim = context_dim if flow_params == "per_sequence" else 0
        width = flow_width(num_latents, latent_dim, over, "FlowGuide")
        if transforms is None:
            self._layers = build_flow(width, kind, num_flows, hidden_dims, self.context_dim, "FlowGuide")
        else:
            self._layers = check_flow(transforms, width, self.context_dim, "FlowGuide")
        self.flows = flow_modules(self._layers)

    def init_locals(self, prior, tokens, start):
        B = tokens.shape[0]
        loc = initial_loc(prior, B, self.init_loc)  # (B, N, D)
        found = {"loc": loc, "log_scale": torch.full_like(loc, math.log(self.init_scale))}
        if self.context_dim:
            found["context"] = torch.zeros(B, self.context_dim, device=prior_device(prior))  # (B, C)
        return found

    def transforms(self) -> list:
        """The flow of the current batch in the sampling direction, conditioned per sequence."""
        if not self.context_dim:
            return list(self._layers)
        context = self.local("context")  # (B, C)
        if self.over == "vector":
            context = context[:, None, :]  # (B, 1, C): one flow per sequence, shared by its N vectors
        return [t.condition(context) if isinstance(t, ConditionalTransform) else t for t in self._layers]

    def distribution(self, tokens, prior):
        loc, scale = self.local("loc"), self.local("log_scale").exp()  # (B, N, D)
        base = normal(loc, scale, self.fixed_noise)
        q = flow_distribution(base, self.transforms(), self.over, cls=ControlledFlow)
        if self.control_variate:
            p = prior().expand(q.batch_shape)  # batch (B,), event (N, D)
            try:
                q.control = (p, kl_divergence(q.base_dist, p))  # (B,) analytic KL(base || p)
            except NotImplementedError:
                pass  # a prior without a Gaussian KL (mixture, flow): the plain estimate
        return q

    def extra_repr(self) -> str:
        return f"kind={self.kind}, over={self.over}, flow_params={self.flow_params}"


class ControlledFlow(FlowDistribution):
    """A flow guide's q whose ELBO entropy term carries a control variate (the value is unchanged).

    With base draw x, z = T(x) and a prior p with analytic KL(base || p), the KL estimate becomes
    KL(base || p) + [log q(z) - log p(z)] - [log base(x) - log p(x)]: unbiased (the bracket
    [log base(x) - log p(x)] - KL(base || p) has mean zero under the base), differentiable, and
    exactly KL(base || p) for an identity flow. `log_prob` (the importance-weighted bound, the
    diagnostics) stays the exact density.

    Attributes:
        control: (the prior's distribution, KL(base || p) (B,)), or None for the plain estimate.
    """

    control: tuple | None = None

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)  # Pyro's plate expands every site's q
        if torch.Size(batch_shape) == self.batch_shape:
            new.control = self.control
        return new

    def score_parts(self, value, *args, **kwargs):
        log_q = self.log_prob(value)  # (B,)
        if self.control is None:
            return ScoreParts(log_prob=log_q, score_function=0, entropy_term=log_q)
        prior, kl_base = self.control
        x = value
        for t in reversed(self.transforms):
            x = t.inv(x)  # back to the base draw (B, N, D): Pyro's caches make this free
        offset = self.base_dist.log_prob(x) - prior.log_prob(x) - kl_base  # (B,), mean zero
        return ScoreParts(log_prob=log_q, score_function=0, entropy_term=log_q - offset)
