"""The flow prior: shapes, an exact density (by hand, by Jacobian, by integration), training, saving,
and one-sentence errors for a flow that does not fit the latent."""

from __future__ import annotations

import pyro.distributions.transforms as T
import pytest
import torch

from ltm import LatentThoughtModel
from ltm.core.errors import ConfigError
from ltm.inference import DualRateOptimizer, InnerLoopConfig, SlowConfig, build_guide
from ltm.priors import FlowPrior, build_prior
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest

N, D = 4, 8
VARIANTS = [("affine_autoregressive", "vector"), ("affine_autoregressive", "block"),
            ("spline_coupling", "vector"), ("spline_coupling", "block")]


def _perturb(module: torch.nn.Module, scale: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _standard_normal_lp(z: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum((-1, -2))  # (S,)


@pytest.mark.parametrize("kind, over", VARIANTS)
def test_shapes_rsample_and_a_start_at_the_standard_normal(kind, over):
    prior = build_prior("flow", N, D, kind=kind, over=over)
    p = prior()
    assert tuple(p.event_shape) == (N, D) and tuple(p.batch_shape) == () and p.has_rsample
    z = p.rsample((5,))  # (5, N, D)
    assert z.shape == (5, N, D) and z.requires_grad
    lp = p.log_prob(z)
    assert lp.shape == (5,) and torch.isfinite(lp).all()
    torch.testing.assert_close(lp, _standard_normal_lp(z), atol=0.2, rtol=0)  # near-identity start
    assert p.expand((3,)).log_prob(torch.randn(3, N, D)).shape == (3,)  # under Pyro's plate
    assert p.mean.shape == (N, D) and p.mean.abs().max() < 0.05


def test_log_prob_is_base_density_plus_log_det_by_hand():
    prior = FlowPrior(1, 3, num_flows=1)  # one MADE layer u = exp(s(z)) * z + m(z): density direction
    _perturb(prior, 0.3)
    z = torch.randn(6, 1, 3)  # (S, N, D)
    layer = prior.flows[0]
    mean, log_scale = layer.arn(z)  # (S, N, D) each
    log_scale = log_scale.clamp(layer.log_scale_min_clip, layer.log_scale_max_clip)
    u = log_scale.exp() * z + mean
    by_hand = _standard_normal_lp(u) + log_scale.sum((-1, -2))
    torch.testing.assert_close(prior().log_prob(z), by_hand)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v), z[0, 0])  # (D, D) of z -> u
    log_det = torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(prior().log_prob(z[:1]), _standard_normal_lp(u[:1]) + log_det, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("kind", ["affine_autoregressive", "spline_coupling"])
def test_density_integrates_to_one_in_two_dimensions(kind):
    prior = FlowPrior(1, 2, kind=kind, num_flows=2, hidden_dims=[16])
    _perturb(prior, 0.1)  # far from N(0, I) (log-densities differ by 1.5-4 nats), still smooth
    g = torch.linspace(-12, 12, 481)
    h = (g[1] - g[0]).item()
    grid = torch.cartesian_prod(g, g).reshape(-1, 1, 2)  # (G, N=1, D=2)
    with torch.no_grad():
        lp = prior().log_prob(grid)  # (G,)
    assert (lp - _standard_normal_lp(grid)).abs().max() > 1.0
    assert lp.exp().sum().item() * h * h == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kind, over", VARIANTS[1:])
def test_one_slow_step_trains_every_flow_parameter(kind, over, tokens):
    prior = build_prior("flow", N, D, kind=kind, over=over)
    ltm = LatentThoughtModel(LatentThoughtModel.build(tiny_config()).decoder, prior)
    opt = DualRateOptimizer(ltm, build_guide("gaussian"), InnerLoopConfig(steps=2),
                            SlowConfig(lr=1e-2, warmup_steps=1))
    before = {k: v.clone() for k, v in prior.named_parameters()}
    assert before and all(k.startswith("flows.") for k in before)
    opt.step(tokens)
    unchanged = [k for k, p in prior.named_parameters() if torch.equal(p.detach(), before[k])]
    assert not unchanged, f"not trained by the slow step: {unchanged}"


def test_state_dict_round_trip_of_a_block_spline_flow():
    prior = FlowPrior(N, D, kind="spline_coupling", over="block")
    _perturb(prior, 0.1)
    clone = FlowPrior(N, D, kind="spline_coupling", over="block")
    clone.load_state_dict(prior.state_dict())
    z = torch.randn(4, N, D)
    torch.testing.assert_close(clone().log_prob(z), prior().log_prob(z))
    assert "zeros" not in prior.state_dict()  # the base's buffer is rebuilt, not saved


def test_own_transforms_are_trained_and_checked():
    prior = FlowPrior(2, 3, transforms=[T.affine_autoregressive(3), T.Permute(torch.tensor([2, 0, 1]))])
    assert len(list(prior.parameters())) > 0  # the TransformModule is a submodule
    z = prior().rsample((4,))  # (4, N, D)
    assert z.shape == (4, 2, 3) and torch.isfinite(prior().log_prob(z)).all()
    with pytest.raises(ConfigError, match=r"transform 0 \(AffineAutoregressive\) does not act on "
                                          r"vectors of width 3, the width of this latent"):
        FlowPrior(2, 3, transforms=[T.affine_autoregressive(5)])
    with pytest.raises(ConfigError, match="width 6"):  # over the block: N * D
        FlowPrior(2, 3, over="block", transforms=[T.spline_coupling(3)])
    with pytest.raises(ConfigError, match="keep width 3"):
        FlowPrior(2, 3, transforms=[T.Permute(torch.tensor([0, 1]))])


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "planar"}, "unknown flow kind 'planar'; choose one of"),
    ({"num_flows": 0}, "num_flows must be an integer >= 1, got 0"),
    ({"over": "sequence"}, "unknown over='sequence'"),
    ({"hidden_dims": [4]}, "hidden_dims must be a non-empty list of integers each >= 8"),
    ({"hidden_dims": []}, "hidden_dims must be a non-empty list"),
])
def test_bad_options_are_one_sentence(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_prior("flow", N, D, **kwargs)


def test_a_spline_coupling_needs_two_coordinates():
    with pytest.raises(ConfigError, match="needs a width >= 2, got 1"):
        FlowPrior(3, 1, kind="spline_coupling")
    FlowPrior(3, 1, kind="spline_coupling", over="block")  # the block has width 3
