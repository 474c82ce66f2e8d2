"""The fast inner loop touches local tensors only; K and guide settings are validated."""

from __future__ import annotations

import pytest
import torch

from ltm.inference import (
    DualRateOptimizer,
    InnerLoopConfig,
    LatentELBO,
    LocalGaussianGuide,
    build_guide,
    fit_local,
)
from ltm.inference.guides.base import pyro_guide
from ltm.models import Decoder, LatentThoughtModel
from ltm.priors import StandardNormal
from tests.conftest import tiny_config


def _fit(ltm, guide, tokens, noise=None, **cfg):
    return fit_local(ltm, guide, tokens, InnerLoopConfig(**cfg), noise=noise)


def test_inner_loop_gives_no_model_gradient_and_moves_locals(tiny_ltm, tokens):
    guide = LocalGaussianGuide()
    losses = _fit(tiny_ltm, guide, tokens, steps=5)
    assert len(losses) == 5
    assert all(p.grad is None for p in tiny_ltm.parameters())
    assert guide.locals["loc"].abs().sum() > 0  # moved from the zero initialisation
    assert (guide.locals["log_scale"] != 0).any()


def test_accumulate_option_reproduces_published_gradient_flow(tiny_ltm, tokens):
    """The decoder and prior gradients are the sum over the inner steps k of grad(loss_k / n_tokens),
    each loss_k taken at the local tensors the trajectory had reached after k steps."""
    noise = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(0))  # one draw for every step
    same = dict(reuse_noise=True, schedule="constant")  # so that a k-step fit is the K-step one cut short
    _fit(tiny_ltm, LocalGaussianGuide(), tokens, noise, steps=3, accumulate_decoder_grads=True, **same)
    params = dict(tiny_ltm.named_parameters())
    got = {name: p.grad.clone() for name, p in params.items()}
    tiny_ltm.zero_grad(set_to_none=True)
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    n_tokens = tokens[:, 1:].numel()
    for k in range(3):
        guide = LocalGaussianGuide()
        _fit(tiny_ltm, guide, tokens, noise, steps=k, **same)  # the locals after k steps
        loss_k = LatentELBO().differentiable_loss(tiny_ltm.model, pyro_guide(guide, tiny_ltm.prior), tokens)
        grads = torch.autograd.grad(loss_k / n_tokens, list(params.values()))
        for name, g in zip(params, grads, strict=True):
            expected[name] += g
    assert got["decoder.embed.weight"].abs().sum() > 0 and got["prior.loc"].abs().sum() > 0
    for name in params:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-7)


def test_zero_steps_keeps_the_initialisation(tiny_ltm, tokens):
    guide = LocalGaussianGuide(init_scale=0.5, init_loc=0.25)
    assert _fit(tiny_ltm, guide, tokens, steps=0) == []
    assert torch.all(guide.locals["loc"] == 0.25)
    torch.testing.assert_close(guide.locals["log_scale"].exp(), torch.full((3, 4, 8), 0.5))


def test_reuse_noise_makes_the_trajectory_deterministic(tiny_ltm, tokens):
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        guide = LocalGaussianGuide()
        noise = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(0))
        runs.append(_fit(tiny_ltm, guide, tokens, noise, steps=4, reuse_noise=True))
    assert runs[0] == runs[1]


def test_locals_are_fresh_per_batch(tiny_ltm, tokens):
    guide = LocalGaussianGuide()
    _fit(tiny_ltm, guide, tokens, steps=3)
    first = guide.locals["loc"]
    _fit(tiny_ltm, guide, tokens[:2], steps=0)
    assert guide.locals["loc"].shape == (2, 4, 8) and guide.locals["loc"] is not first
    assert torch.all(guide.locals["loc"] == 0)


def test_bad_settings_are_refused_with_the_cause(tiny_ltm, tokens):
    with pytest.raises(ValueError, match="inner steps K must be >= 0"):
        InnerLoopConfig(steps=-1)
    with pytest.raises(ValueError, match="unknown fast optimizer 'lbfgs'"):
        InnerLoopConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="unknown inner-loop schedule"):
        InnerLoopConfig(schedule="step")
    delta = LatentThoughtModel.build(tiny_config(), "delta")
    with pytest.raises(ValueError, match="degenerate.*guide='prior'"):
        DualRateOptimizer(delta, build_guide("gaussian"))
    with pytest.raises(ValueError, match="unknown guide .encoder."):
        build_guide("encoder")


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's warning of the NaN loss raised here
def test_non_finite_loss_is_an_error_not_a_silent_nan(tiny_ltm, tokens):
    with torch.no_grad():
        tiny_ltm.decoder.embed.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="inner step 1/3: the ELBO loss is nan"):
        _fit(tiny_ltm, LocalGaussianGuide(), torch.zeros_like(tokens), steps=3)


def test_guide_of_the_wrong_shape_is_named(tiny_ltm, tokens):
    class WrongShapeGuide(LocalGaussianGuide):
        def distribution(self, tokens, prior):
            return super().distribution(tokens, prior).base_dist.expand((3, 4, 9)).to_event(2)

    guide = WrongShapeGuide()
    guide.reset(tiny_ltm.prior, tokens)
    guide.locals = {k: torch.zeros(3, 4, 9) for k in guide.locals}
    with pytest.raises(ValueError, match=r"site 'z' has shape \(3, 4, 9\) but the prior's event shape"):
        LatentELBO().differentiable_loss(tiny_ltm.model, pyro_guide(guide, tiny_ltm.prior), tokens)


def test_prior_shape_must_match_decoder():
    with pytest.raises(ValueError, match=r"event shape \(4, 9\).*\(4, 8\)"):
        LatentThoughtModel(Decoder(tiny_config()), StandardNormal(4, 9))
