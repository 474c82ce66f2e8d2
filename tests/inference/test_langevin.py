"""The Langevin guide: short-run ULA / MALA chains whose samples match a posterior known on a grid,
and the bounds that need log q(z) refused for it (and for the MAP point)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from ltm.core.sites import LATENT_SITE, SEQUENCE_PLATE
from ltm.inference import (
    DeltaGuide,
    DualRateOptimizer,
    InnerLoopConfig,
    LocalGaussianGuide,
    SlowConfig,
    build_guide,
    fit_local,
)
from ltm.inference.bounds import (
    fresh_noise_elbo,
    importance_weighted_bound,
    prefix_predictive_perplexity,
    published_protocol,
)
from ltm.inference.guides.langevin import LangevinGuide
from ltm.priors import StandardNormal
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def log_likelihood(z: torch.Tensor) -> torch.Tensor:
    """A skewed, log-concave 2-D likelihood (two Poisson counts: 3 at rate e^z1, 0 at rate
    e^(z2 + z1/2)): z (..., 1, 2) -> (...)."""
    z1, z2 = z[..., 0, 0], z[..., 0, 1]
    return 3 * z1 - z1.exp() - (z2 + 0.5 * z1).exp()


class ToyFamily:
    """What `fit_local` needs of a family: z ~ N(0, I) of event shape (1, 2), a factor likelihood."""

    prior = StandardNormal(1, 2)

    def model(self, tokens: torch.Tensor) -> None:
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            z = pyro.sample(LATENT_SITE, self.prior())  # (B, 1, 2)
            pyro.factor("likelihood", log_likelihood(z))  # (B,)

    def initial_latents(self, tokens: torch.Tensor) -> None:
        return None


def grid_posterior() -> tuple[torch.Tensor, torch.Tensor]:
    """Exact posterior mean and sd (2,) of z by integration on a 1201^2 grid over [-7, 7]^2."""
    g = torch.linspace(-7, 7, 1201, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)[..., None, :]  # (n, n, 1, 2)
    log_post = log_likelihood(z) - 0.5 * z.square().sum((-2, -1))  # (n, n)
    w = (log_post - log_post.logsumexp((0, 1))).exp()[..., None]  # (n, n, 1)
    mean = (w * z[..., 0, :]).sum((0, 1))  # (2,)
    sd = (w * (z[..., 0, :] - mean).square()).sum((0, 1)).sqrt()  # (2,)
    return mean.float(), sd.float()


# (mala, step size, steps, bias budget). The budget covers what the Monte-Carlo error does not:
# ULA's O(eta) bias (measured with 100k chains at eta 0.03, 200 steps: (-0.007, -0.004) +- 0.002)
# and MALA's unfinished burn-in from the prior (at eta 0.1, 150 steps: (0.000, 0.002) +- 0.002),
# each about doubled.
CHAINS = {"mala": (True, 0.1, 150, 0.005), "ula": (False, 0.03, 200, 0.015)}


@pytest.mark.parametrize("kind", list(CHAINS))
def test_chains_sample_the_grid_posterior(kind):
    """2000 chains (identical sequences): tolerance = 4 standard errors of the mean + bias budget.

    Measured (seed 0): MALA errors about 0.01 against a tolerance of about 0.06; ULA about 0.01
    against 0.07 (the posterior mean (0.557, -0.794) is 0.56 and 0.79 from the prior's)."""
    mala, eta, steps, bias = CHAINS[kind]
    mean, sd = grid_posterior()
    B = 2000
    guide = LangevinGuide(step_size=eta, mala=mala)
    tokens = torch.zeros(B, 2, dtype=torch.long)  # B identical "sequences": B independent chains
    energies = fit_local(ToyFamily(), guide, tokens, InnerLoopConfig(steps=steps))
    z = guide.locals["z"].detach()[:, 0]  # (B, 2)
    tolerance = 4 * z.std(0) / math.sqrt(B) + bias  # (2,)
    error = (z.mean(0) - mean).abs()
    assert (error < tolerance).all(), (kind, error.tolist(), tolerance.tolist())
    assert ((z.std(0) / sd - 1).abs() < 0.1).all(), (z.std(0).tolist(), sd.tolist())
    assert len(energies) == steps and energies[-1] < energies[0]  # from the prior into the posterior
    assert 0.0 < guide.acceptance_rate <= 1.0
    assert (guide.acceptance_rate < 1.0) == mala


def test_energy_is_minus_log_joint_and_mala_rejects_wild_steps():
    guide = LangevinGuide(step_size=50.0, mala=True, init="prior_mean")
    energies = fit_local(ToyFamily(), guide, torch.zeros(64, 2, dtype=torch.long), InnerLoopConfig(steps=5))
    z0 = torch.zeros(1, 2)
    exact = -(log_likelihood(z0) + torch.distributions.Normal(0.0, 1.0).log_prob(z0).sum())  # U(0)
    assert energies[0] == pytest.approx(64 * exact.item(), rel=1e-5)  # summed over the 64 chains
    assert 0.0 <= guide.acceptance_rate < 0.2


def test_ula_refuses_a_non_finite_energy():
    guide = LangevinGuide(step_size=1.0)
    guide.reset(ToyFamily.prior, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(FloatingPointError, match="lower the step size"):
        guide.sample_locals(lambda: guide.locals["z"].sum((-2, -1)) * math.inf, 2, ToyFamily.prior)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan, math.inf, "fast"])
def test_a_step_size_that_is_not_positive_and_finite_is_refused(bad):
    with pytest.raises(ValueError, match="step_size must be a finite number > 0") as err:
        LangevinGuide(step_size=bad)
    assert str(err.value).count(".") <= 2  # one sentence
    with pytest.raises(ValueError, match="init must be one of"):
        LangevinGuide(init="zero")


def test_registry_and_density_flags():
    assert isinstance(build_guide("langevin", step_size=0.05, mala=True), LangevinGuide)
    assert not LangevinGuide.has_density and not DeltaGuide.has_density
    assert LocalGaussianGuide.has_density


@pytest.fixture
def tiny_ltm_2d():
    from ltm import DecoderConfig, LatentThoughtModel

    cfg = DecoderConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, d_model=16, n_latent=1, d_latent=2)
    return LatentThoughtModel.build(cfg).eval()


@pytest.mark.parametrize("guide", [LangevinGuide(mala=True), DeltaGuide()], ids=["langevin", "delta"])
def test_bounds_that_need_log_q_are_refused(guide, tiny_ltm_2d):
    tokens = torch.randint(0, 16, (4, 17))  # (B, T+1)
    inner = InnerLoopConfig(steps=2)
    name = type(guide).__name__
    for score in (lambda: fresh_noise_elbo(tiny_ltm_2d, guide, tokens, inner),
                  lambda: importance_weighted_bound(tiny_ltm_2d, guide, tokens, inner, 4),
                  lambda: published_protocol(tiny_ltm_2d, guide, tokens, inner)):
        with pytest.raises(ValueError, match=f"needs log q\\(z\\), but guide {name} has no tractable "
                                             f"density.*prefix_predictive_perplexity") as err:
            score()
        assert str(err.value).count("\n") == 0
    prefix = prefix_predictive_perplexity(tiny_ltm_2d, guide, tokens, 8, inner, num_samples=4)
    assert math.isfinite(prefix.nll) and prefix.num_samples == 1  # a point mass: one draw
    assert prefix.tokens == 4 * (17 - 8)


def test_the_slow_step_trains_on_minus_log_joint(tiny_ltm_2d):
    """The slow step's loss at the Langevin sample is -log p(x | z) - log p(z), per token."""
    tiny_ltm_2d.train()
    guide = LangevinGuide(step_size=0.01, mala=True)
    opt = DualRateOptimizer(tiny_ltm_2d, guide, InnerLoopConfig(steps=3),
                            SlowConfig(lr=1e-2, warmup_steps=0, decay_steps=2))
    tokens = torch.randint(0, 16, (4, 17))  # (B, T+1)
    result = opt.step(tokens)
    z = guide.locals["z"]  # (B, 1, 2): the sample the slow step used
    with torch.no_grad():
        log_prior = tiny_ltm_2d.prior().log_prob(z).sum().item()
    assert len(result.inner_losses) == 3 and math.isfinite(result.loss)
    assert result.kl == pytest.approx(-log_prior / tokens[:, 1:].numel(), rel=1e-4)
