"""One contract test for every sequence-level guide; swapping the guide changes no other code."""

from __future__ import annotations

import pytest
import torch
from pyro import poutine
from safetensors.torch import load_file

from ltm.core.sites import LATENT_SITE
from ltm.inference import GUIDES, DualRateOptimizer, InnerLoopConfig, SlowConfig, build_guide
from ltm.inference.guides.base import pyro_guide
from ltm.inference.inner_loop import fit_local

N, D, V = 4, 8, 37  # tiny_config's thought shape and vocabulary
CONTEXT = {"vocab_size": V, "num_latents": N, "latent_dim": D}
SEQUENCE_GUIDES = sorted(name for name in GUIDES if name != "none")  # "none": token-level thoughts
GLOBAL_GUIDES = [name for name in SEQUENCE_GUIDES if list(build_guide(name, CONTEXT).parameters())]


@pytest.fixture(params=SEQUENCE_GUIDES)
def name(request) -> str:
    return request.param


def _fitted(name, tiny_ltm, tokens, guide=None, seed=1):
    guide = guide or build_guide(name, CONTEXT)
    torch.manual_seed(seed)
    fit_local(tiny_ltm, guide, tokens, InnerLoopConfig(steps=2, lr=0.1))
    return guide


def test_samples_the_latent_site_with_shapes_and_log_prob(name, tiny_ltm, tokens):
    guide = _fitted(name, tiny_ltm, tokens)
    trace = poutine.trace(pyro_guide(guide, tiny_ltm.prior)).get_trace(tokens)
    trace.compute_log_prob()
    site = trace.nodes[LATENT_SITE]
    B = tokens.shape[0]
    assert site["value"].shape == (B, N, D)
    assert site["fn"].has_rsample
    assert site["log_prob"].shape == (B,)
    if guide.has_density:
        assert torch.isfinite(site["log_prob"]).all()


def test_rsample_is_differentiable_in_the_local_parameters(name, tiny_ltm, tokens):
    guide = build_guide(name, CONTEXT)
    guide.reset(tiny_ltm.prior, tokens)
    z = poutine.trace(pyro_guide(guide, tiny_ltm.prior)).get_trace(tokens).nodes[LATENT_SITE]["value"]
    trainable = guide.local_parameters() + [p for p in guide.parameters() if p.requires_grad]
    if not trainable:
        pytest.skip(f"{name}: q is the prior, nothing of the guide's own to differentiate")
    (z * torch.randn_like(z)).sum().backward()
    assert any(t.grad is not None and t.grad.abs().sum() > 0 for t in trainable)


def test_slow_step_trains_the_global_parameters(name, tiny_ltm, tokens):
    guide = build_guide(name, CONTEXT)
    params = dict(guide.named_parameters())
    if not params:
        pytest.skip(f"{name} has no global parameters: only its locals are fitted, per batch")
    opt = DualRateOptimizer(tiny_ltm, guide, InnerLoopConfig(steps=2), SlowConfig(lr=1e-2, warmup_steps=1))
    before = {k: v.detach().clone() for k, v in params.items()}
    opt.step(tokens)
    moved = [k for k, v in params.items() if not torch.equal(v.detach(), before[k])]
    assert moved == list(params), f"not trained by the slow step: {sorted(set(params) - set(moved))}"


def test_state_dict_round_trip(name, tiny_ltm, tokens):
    guide = build_guide(name, CONTEXT)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    clone = build_guide(name, CONTEXT)
    clone.load_state_dict(guide.state_dict())
    draws = []
    for g in (guide, clone):
        _fitted(name, tiny_ltm, tokens, g)
        torch.manual_seed(2)
        trace = poutine.trace(pyro_guide(g, tiny_ltm.prior)).get_trace(tokens)
        draws.append(trace.nodes[LATENT_SITE]["value"])  # (B, N, D)
    torch.testing.assert_close(draws[0], draws[1])


@pytest.mark.parametrize("name", GLOBAL_GUIDES)
def test_checkpoint_round_trip_through_the_cli(name, tmp_path, tmp_path_factory):
    from ltm.train import main as train_main
    from ltm.training.checkpoint import load_checkpoint, load_guide
    from tests.cli_helpers import shared_paths, tiny_flags

    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    assert train_main([*tiny_flags(corpus, cache, run, max_steps=2, eval_every=2, lr_decay_steps=2),
                       "--guide", name]) == 0
    model, _, _ = load_checkpoint(run)
    guide = load_guide(run, model=model)
    saved = load_file(run / "step_000002" / "model.safetensors")
    state = guide.state_dict()
    assert state and all(torch.equal(saved[f"guide.{k}"], v) for k, v in state.items())
    fresh = build_guide(name, {**CONTEXT, "vocab_size": model.decoder.cfg.vocab_size, "num_latents": 2})
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in state.items())  # trained, loaded
