"""A normalising-flow prior over the thoughts, and the flow builder the flow guide shares.

A flow acts either on each latent vector's D coordinates, one flow shared by the N vectors
(`over="vector"`, the default: width D, cheap, the vectors stay independent and identically
distributed under it), or on the flattened N*D block (`over="block"`: it can couple the vectors
and treat each differently; its networks grow as (N*D)^2). Built-in layers are Pyro transforms,
initialised near the identity, so a flow prior starts at N(0, I) and a flow guide at its Gaussian.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.transforms import (
    AffineAutoregressive,
    ConditionalAffineAutoregressive,
    ConditionalSplineAutoregressive,
    SplineCoupling,
)
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN, DenseNN
from torch import nn
from torch.distributions import Independent, Transform, constraints
from torch.distributions.transforms import ReshapeTransform

from ltm.core.errors import ConfigError
from ltm.priors.base import Prior

KINDS = ("affine_autoregressive", "spline_coupling")
OVER = ("vector", "block")
COUNT_BINS = 8  # spline segments
NEAR_IDENTITY = 1e-2  # scale of the output layers' initial weights: each layer starts near x -> x
MEAN_DRAWS = 256  # common base draws of the Monte-Carlo mean
_DERIVATIVE = math.log(math.expm1(1 - 1e-3))  # softplus^-1 of Pyro's spline slope 1 (less its floor)


def flow_width(num_latents: int, latent_dim: int, over: str, owner: str = "flow") -> int:
    """The width a flow acts on: D for `over="vector"`, N*D for `over="block"`."""
    if over not in OVER:
        raise ConfigError(f"{owner}: unknown over='{over}'; choose one of {list(OVER)}.")
    return latent_dim if over == "vector" else num_latents * latent_dim


def build_flow(dim: int, kind: str = "affine_autoregressive", num_flows: int = 2,
               hidden_dims: list[int] | None = None, context_dim: int = 0,
               owner: str = "flow") -> list[Transform]:
    """Flow layers on vectors of width `dim`, in the sampling direction (base -> z), near identity.

    Args:
        dim: Width of the vectors the flow acts on.
        kind: "affine_autoregressive" (Pyro's `AffineAutoregressive`, MADE networks, orders
            alternating between layers) or "spline_coupling" (Pyro's `SplineCoupling`, the
            coordinates reversed around every other layer so both halves are transformed).
        num_flows: Layers (>= 1).
        hidden_dims: Hidden widths of each layer's network (default [3 * dim + 1]).
        context_dim: 0 for plain layers; C > 0 for conditional layers whose networks also read a
            context vector of width C (`.condition(context)`): conditional affine autoregressive,
            or, for "spline_coupling", conditional spline autoregressive (Pyro has no conditional
            coupling layer).
        owner: The class named in error messages.
    """
    if kind not in KINDS:
        raise ConfigError(f"{owner}: unknown flow kind '{kind}'; choose one of {list(KINDS)}.")
    if not isinstance(num_flows, int) or num_flows < 1:
        raise ConfigError(f"{owner}: num_flows must be an integer >= 1, got {num_flows!r}.")
    hidden = [3 * dim + 1] if hidden_dims is None else list(hidden_dims)
    coupling = kind == "spline_coupling" and context_dim == 0
    least = 1 if coupling else dim  # a MADE network needs at least one unit per input
    if not hidden or any(not isinstance(h, int) or h < least for h in hidden):
        raise ConfigError(f"{owner}: hidden_dims must be a non-empty list of integers each >= "
                          f"{least} for a {kind} flow of width {dim}, got {hidden_dims!r}.")
    if coupling and dim < 2:
        raise ConfigError(f"{owner}: spline_coupling splits its input in two halves, so it needs a "
                          f"width >= 2, got {dim}; use kind='affine_autoregressive' or over='block'.")
    layers: list[Transform] = []
    for i in range(num_flows):
        order = torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)  # (dim,)
        if coupling:
            layer = _spline_coupling(dim, hidden)
            layers += [Reverse(), layer, Reverse()] if i % 2 else [layer]  # the other half
        else:
            layers.append(_autoregressive(dim, kind, hidden, context_dim, order))
    return layers


class Reverse(Transform):
    """x -> x reversed along its last dimension (volume preserving; follows x to any device)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self):
        super().__init__(cache_size=1)  # cached: the layers around it keep their cached draws

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[:-1])


def _autoregressive(dim: int, kind: str, hidden: list[int], context_dim: int,
                    order: torch.Tensor) -> Transform:
    """One (conditional) affine or spline autoregressive layer, its output layer near identity."""
    bins = [COUNT_BINS, COUNT_BINS, COUNT_BINS - 1, COUNT_BINS]
    params = [1, 1] if kind == "affine_autoregressive" else bins
    arn = (ConditionalAutoRegressiveNN(dim, context_dim, hidden, param_dims=params, permutation=order)
           if context_dim else AutoRegressiveNN(dim, hidden, param_dims=params, permutation=order))
    out = arn.layers[-1]
    with torch.no_grad():
        out.weight.mul_(NEAR_IDENTITY)
        out.bias.zero_()
        if kind != "affine_autoregressive":  # rows (multiplier, dim): widths, heights, slopes, lambdas
            out.bias.view(sum(params), dim)[2 * COUNT_BINS:3 * COUNT_BINS - 1] = _DERIVATIVE
    if kind == "affine_autoregressive":
        return ConditionalAffineAutoregressive(arn) if context_dim else AffineAutoregressive(arn)
    return ConditionalSplineAutoregressive(dim, arn, count_bins=COUNT_BINS)


def _spline_coupling(dim: int, hidden: list[int]) -> SplineCoupling:
    """Pyro's spline coupling layer (first half elementwise, second half conditioned on it)."""
    split = dim // 2
    rest = dim - split
    sizes = [rest * COUNT_BINS, rest * COUNT_BINS, rest * (COUNT_BINS - 1), rest * COUNT_BINS]
    net = DenseNN(split, hidden, param_dims=sizes)
    layer = SplineCoupling(dim, split, net, count_bins=COUNT_BINS)
    with torch.no_grad():
        net.layers[-1].weight.mul_(NEAR_IDENTITY)
        net.layers[-1].bias.zero_()
        net.layers[-1].bias[sizes[0] + sizes[1]:sizes[0] + sizes[1] + sizes[2]] = _DERIVATIVE
        spline = layer.lower_spline
        for p in (spline.unnormalized_widths, spline.unnormalized_heights, spline.unnormalized_lambdas):
            p.zero_()
        spline.unnormalized_derivatives.fill_(_DERIVATIVE)
    return layer


def check_flow(transforms, dim: int, context_dim: int = 0, owner: str = "flow") -> list:
    """Check user-given transforms act on vectors of width `dim`; one sentence if one does not.

    Each is run once on zeros (2, dim) (conditioned on a zero context (2, C) where `context_dim`
    is C > 0), and must return the same shape and a log-determinant per row.
    """
    transforms = list(transforms)
    if not transforms:
        raise ConfigError(f"{owner}: transforms must be a non-empty list of Pyro transforms.")
    device = next((p.device for m in flow_modules(transforms) for p in m.parameters()), None)
    x = torch.zeros(2, dim, device=device)  # (2, dim)
    for i, t in enumerate(transforms):
        name = type(t).__name__
        if isinstance(t, ConditionalTransform) and not context_dim:
            raise ConfigError(f"{owner}: transform {i} ({name}) is conditional; it needs a "
                              f"per-sequence context (flow_params='per_sequence' in the guide).")
        if not isinstance(t, Transform | ConditionalTransform):
            raise ConfigError(f"{owner}: transform {i} is a {name}, not a Pyro/torch Transform.")
        try:
            with torch.no_grad():
                bound = t.condition(x.new_zeros(2, context_dim)) if isinstance(t, ConditionalTransform) else t
                y = bound(x)
                log_det = bound.log_abs_det_jacobian(x, y)
        except (RuntimeError, ValueError, IndexError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{owner}: transform {i} ({name}) does not act on vectors of width "
                              f"{dim}, the width of this latent ({first}).") from None
        if tuple(y.shape) != (2, dim) or tuple(log_det.shape) not in ((2,), (2, dim)):
            raise ConfigError(f"{owner}: transform {i} ({name}) maps width {dim} to shape "
                              f"{tuple(y.shape[1:])}; a flow over this latent must keep width {dim}.")
    return transforms


def flow_modules(transforms: list) -> nn.ModuleList:
    """The modules holding a flow's parameters (to register as submodules): each layer that is an
    `nn.Module`, or whose inverse is (a Pyro `TransformModule` given as `layer.inv`)."""
    found = [t if isinstance(t, nn.Module) else t.inv for t in transforms]
    return nn.ModuleList([m for m in found if isinstance(m, nn.Module)])


class FlowDistribution(dist.TransformedDistribution):
    """A transformed distribution with a `mean` (Monte Carlo) and a log-density that broadcasts.

    `mean` averages the flow over `MEAN_DRAWS` antithetic base draws that are the same for every
    batch element (a fixed-seed generator): deterministic, exact for an affine flow, and equal
    posteriors get equal means.
    `log_prob` first broadcasts the value to the batch shape, which conditional layers need.
    """

    reuse_cache = True  # False: log_prob runs the flow at the value, never a cached pre-image

    @property
    def mean(self) -> torch.Tensor:
        base = self.base_dist
        while isinstance(base, Independent):
            base = base.base_dist
        if not isinstance(base, dist.Normal):
            return super().mean
        loc, scale = base.loc, base.scale  # (*batch, N, D)
        gen = torch.Generator(device=loc.device).manual_seed(0)
        shape = (MEAN_DRAWS // 2,) + (1,) * len(self.batch_shape) + tuple(loc.shape[len(self.batch_shape):])
        eps = torch.randn(shape, generator=gen, device=loc.device, dtype=loc.dtype)  # (S/2, 1.., N, D)
        x = loc + scale * torch.cat([eps, -eps])  # antithetic: exact for an affine flow
        for t in self.transforms:
            x = t(x)  # (S, *batch, N, D) at the end
        return x.mean(0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape)
        if value.shape != shape:
            value = value.expand(shape)
        elif not self.reuse_cache:
            value = value.view_as(value)  # a new tensor object: Pyro's transform caches miss
        return super().log_prob(value)


class DensityFlowDistribution(FlowDistribution):
    """A flow whose `log_prob` is always computed from the value (a prior's: one pass in the
    density direction), so it does not depend on which draw the transforms cached last."""

    reuse_cache = False


def flow_distribution(base: dist.Normal, transforms: list, over: str,
                      cls: type[FlowDistribution] = FlowDistribution) -> FlowDistribution:
    """Push a diagonal Normal `base` over thoughts (*batch, N, D) through `transforms`.

    Args:
        cls: `FlowDistribution` (a guide's: `log_prob` of its own latest draw reuses Pyro's cached
            pre-image, no inverse pass), `DensityFlowDistribution` (a prior's) or a subclass.

    Returns:
        A distribution with batch shape `*batch` and event shape (N, D).
    """
    event = tuple(base.batch_shape[-2:])  # (N, D)
    if over == "block":  # (N, D) -> (N*D,) -> flow -> (N, D)
        flat = (event[0] * event[1],)
        transforms = [ReshapeTransform(event, flat, cache_size=1), *transforms,
                      ReshapeTransform(flat, event, cache_size=1)]  # cached: IAF scores its draws in one pass
    return cls(base.to_event(2), list(transforms))


class FlowPrior(Prior):
    """p(z): a standard normal over (N, D) pushed through a learned normalising flow.

    The built-in layers are written in the density direction (Pyro's `.inv` of each layer):
    `log_prob`, needed at every ELBO step, is one pass; `rsample` of "affine_autoregressive"
    takes one pass per coordinate of the flow's width (cheap at `over="vector"`). `log_prob` always
    runs the flow at the value it is given (never a cached pre-image of an earlier draw).

    Args:
        kind: "affine_autoregressive" or "spline_coupling".
        num_flows: Layers (>= 1).
        hidden_dims: Hidden widths of each layer's network (default [3 * width + 1]).
        over: "vector" (one flow on each latent vector's D coordinates, shared by the N vectors)
            or "block" (one flow on the flattened N*D block).
        transforms: Your own Pyro transforms (`TransformModule`s, also given as `layer.inv`, are
            trained and saved), in the sampling direction (base -> z), acting on the width `over`
            gives; replaces `kind`, `num_flows` and `hidden_dims`. `log_prob` inverts them, so an
            autoregressive layer is best given as `.inv` (one pass for the density).
    """

    def __init__(self, num_latents: int, latent_dim: int, kind: str = "affine_autoregressive",
                 num_flows: int = 2, hidden_dims: list[int] | None = None, over: str = "vector",
                 transforms: list | None = None):
        super().__init__(num_latents, latent_dim)
        width = flow_width(num_latents, latent_dim, over, "FlowPrior")
        self.kind, self.over, self.density_direction = kind, over, transforms is None
        if transforms is None:
            self._layers = build_flow(width, kind, num_flows, hidden_dims, owner="FlowPrior")
        else:
            self._layers = check_flow(transforms, width, owner="FlowPrior")
        self.flows = flow_modules(self._layers)
        self.register_buffer("zeros", torch.zeros(num_latents, latent_dim), persistent=False)  # (N, D)

    def transforms(self) -> list[Transform]:
        """The flow in the sampling direction (base -> z)."""
        if self.density_direction:
            return [t.inv for t in reversed(self._layers)]
        return list(self._layers)

    def forward(self, context=None) -> FlowDistribution:
        base = dist.Normal(self.zeros, torch.ones_like(self.zeros))  # (N, D)
        return flow_distribution(base, self.transforms(), self.over, DensityFlowDistribution)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, over={self.over}"
