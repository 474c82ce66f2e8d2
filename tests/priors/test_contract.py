"""One contract test for every prior; swapping the prior changes no other code."""

from __future__ import annotations

import pytest
import torch

from ltm import LatentThoughtModel
from ltm.inference import DualRateOptimizer, InnerLoopConfig, SlowConfig, build_guide
from ltm.priors import PRIORS, Prior, build_prior
from tests.conftest import tiny_config

N, D = 4, 8


SEQUENCE_PRIORS = sorted(name for name, cls in PRIORS.items() if not cls.token_level)
GUIDE_FOR = {"vamp": "amortized"}  # priors built on a guide's global parameters
CONTEXT = {"vocab_size": 37, "num_latents": N, "latent_dim": D}  # tiny_config's vocabulary


def guide_for(prior: Prior):
    """A fresh guide that fits `prior`: the one it is built on (`GUIDE_FOR`), q = p for a point
    mass, else the local Gaussian."""
    name = next(n for n, cls in PRIORS.items() if cls is type(prior))
    if name in GUIDE_FOR:
        return build_guide(GUIDE_FOR[name], CONTEXT)
    return build_guide("prior" if prior.is_degenerate else "gaussian")


BOUND = {}  # id(prior) -> the guide it was bound to


def make_prior(spec, guide=None) -> Prior:
    """The prior, bound to `guide` (default: a fresh `guide_for` it)."""
    prior = build_prior(spec, N, D)
    BOUND[id(prior)] = guide or guide_for(prior)
    prior.bind_guide(BOUND[id(prior)])
    return prior


@pytest.fixture(params=SEQUENCE_PRIORS)
def prior(request) -> Prior:
    return make_prior(request.param)


def test_shapes_and_finite_log_prob(prior):
    p = prior()
    assert tuple(p.event_shape) == (N, D) and tuple(p.batch_shape) == ()
    z = p.rsample((5,))  # (5, N, D)
    assert z.shape == (5, N, D)
    lp = p.log_prob(z)
    assert lp.shape == (5,) and torch.isfinite(lp).all()


def test_rsample_is_differentiable(prior):
    assert prior().has_rsample
    if not list(prior.parameters()):
        pytest.skip(f"{type(prior).__name__} has no parameters to differentiate")
    z = prior().rsample((3,))
    assert z.requires_grad
    (z * torch.randn_like(z)).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())


def test_slow_step_trains_learnable_parameters(prior, tokens):
    ltm = LatentThoughtModel(LatentThoughtModel.build(tiny_config()).decoder, prior)
    guide = BOUND[id(prior)]
    opt = DualRateOptimizer(ltm, guide, InnerLoopConfig(steps=2), SlowConfig(lr=1e-2, warmup_steps=1))
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    result = opt.step(tokens)
    assert torch.isfinite(torch.tensor(result.loss))
    for name, p in prior.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} was not trained by the slow step"


def test_state_dict_round_trip(prior):
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn_like(p))
    clone = make_prior(type(prior), BOUND[id(prior)])  # a guide's globals (vamp's encoder) stay the guide's
    clone.load_state_dict(prior.state_dict())
    z = prior().sample((4,))
    torch.testing.assert_close(clone().log_prob(z), prior().log_prob(z))


def test_selectable_by_module_class_path():
    prior = build_prior("ltm.priors.learned_normal:LearnedNormal", N, D, init_scale=0.5)
    torch.testing.assert_close(prior().base_dist.scale, torch.full((N, D), 0.5))


def test_unknown_or_wrong_prior_is_named():
    with pytest.raises(ValueError, match="unknown prior 'gaussian'; choose one of"):
        build_prior("gaussian", N, D)
    with pytest.raises(ValueError, match="cannot import prior 'priors:Nope'"):
        build_prior("priors:Nope", N, D)
    with pytest.raises(ValueError, match="not a subclass of ltm.priors.base.Prior"):
        build_prior("torch.nn:Linear", N, D)
    with pytest.raises(ValueError, match="num_latents and latent_dim must be >= 1"):
        build_prior("standard_normal", 0, D)


def test_context_delta_is_exact_and_needs_its_context():
    from torch.distributions import kl_divergence

    prior = build_prior("context_delta", 1, D)
    hidden = torch.randn(2, 5, D)  # (B, T, D) a thought per token
    p = prior(hidden)
    assert tuple(p.batch_shape) == (2, 5) and tuple(p.event_shape) == (D,)
    assert torch.equal(p.log_prob(hidden), torch.zeros(2, 5))
    assert torch.equal(kl_divergence(p, p), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="pass context"):
        prior()
