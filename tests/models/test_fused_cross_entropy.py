"""The chunked (fused linear) cross-entropy equals the one over full logits: values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltm.core.sites import IGNORE_INDEX
from ltm.inference import EmptyGuide, InnerLoopConfig, LatentELBO, LocalGaussianGuide, fit_local
from ltm.inference.guides.base import pyro_guide
from ltm.models import fused_cross_entropy
from ltm.models.fused_cross_entropy import chunk_rows, fused_linear_cross_entropy
from ltm.models.likelihood import MaterialisedLogits, TokenSequence
from ltm.ponder.vanilla import VanillaDecoder
from tests.conftest import tiny_config

N, D, V = 50, 16, 37
ROWS = 7  # does not divide N


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g, requires_grad=True)  # (N, D)
    weight = torch.randn(V, D, generator=g).requires_grad_()  # (V, D)
    targets = torch.randint(V, (N,), generator=g)  # (N,)
    targets[::5] = IGNORE_INDEX
    return hidden, weight, targets


def _reference(hidden, weight, targets):
    return F.cross_entropy(hidden @ weight.T, targets, reduction="none", ignore_index=IGNORE_INDEX)


def test_nll_equals_full_logits_with_ignored_targets():
    hidden, weight, targets = _inputs()
    for rows in (ROWS, 1, N, 4 * N):
        nll = fused_linear_cross_entropy(hidden, weight, targets, rows)  # (N,)
        assert nll.dtype == torch.float32
        torch.testing.assert_close(nll, _reference(hidden, weight, targets), rtol=0, atol=1e-5)
        assert torch.all(nll[targets == IGNORE_INDEX] == 0)


@pytest.mark.parametrize("weighted", [False, True], ids=["summed", "per_row_weights"])
def test_gradients_equal_full_logits(weighted):
    hidden, weight, targets = _inputs()
    w = torch.rand(N, generator=torch.Generator().manual_seed(3)) if weighted else torch.ones(N)
    fused = torch.autograd.grad((fused_linear_cross_entropy(hidden, weight, targets, ROWS) * w).sum(),
                                [hidden, weight])
    ref = torch.autograd.grad((_reference(hidden, weight, targets) * w).sum(), [hidden, weight])
    for a, b in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.all(fused[0][targets == IGNORE_INDEX] == 0)


@pytest.mark.parametrize("flash", [True, False], ids=["flash_kernel", "row_chunks"])
def test_only_hidden_requires_grad(flash, monkeypatch):
    if not flash:
        monkeypatch.setattr(fused_cross_entropy, "_FLASH_CPU", None)
    elif fused_cross_entropy._FLASH_CPU is None:
        pytest.skip("this torch build has no CPU flash-attention kernel")
    hidden, weight, targets = _inputs()
    weight.requires_grad_(False)
    w = torch.rand(N, generator=torch.Generator().manual_seed(3))
    nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)
    ref = _reference(hidden, weight, targets)
    torch.testing.assert_close(nll, ref, rtol=0, atol=1e-5)
    assert torch.all(nll[targets == IGNORE_INDEX] == 0)
    (grad,) = torch.autograd.grad((nll * w).sum(), hidden)
    (expected,) = torch.autograd.grad((ref * w).sum(), hidden)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


def test_fp64_head_scores_in_fp64():
    hidden, weight, targets = (x.detach().double() if x.is_floating_point() else x for x in _inputs())
    hidden.requires_grad_()
    nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)
    assert nll.dtype == torch.float64
    torch.testing.assert_close(nll, _reference(hidden, weight, targets), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(nll.sum(), hidden)
    (ref,) = torch.autograd.grad(_reference(hidden, weight, targets).sum(), hidden)
    torch.testing.assert_close(grad, ref, rtol=0, atol=1e-12)


def test_no_grad_gives_a_plain_tensor():
    hidden, weight, targets = _inputs()
    with torch.no_grad():
        nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)
    assert not nll.requires_grad
    torch.testing.assert_close(nll, _reference(hidden, weight, targets).detach(), rtol=0, atol=1e-5)


def test_double_backward_through_the_gradient():
    """An unrolled inner loop differentiates the gradient itself (create_graph=True)."""
    hidden, weight, targets = _inputs()
    (g,) = torch.autograd.grad(fused_linear_cross_entropy(hidden, weight, targets, ROWS).sum(),
                               hidden, create_graph=True)
    fused = torch.autograd.grad(g.square().sum(), [hidden, weight])
    (g,) = torch.autograd.grad(_reference(hidden, weight, targets).sum(), hidden, create_graph=True)
    ref = torch.autograd.grad(g.square().sum(), [hidden, weight])
    for a, b in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_autocast_bf16_keeps_an_fp32_loss_close_to_fp32():
    hidden, weight, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)
    assert nll.dtype == torch.float32
    grads = torch.autograd.grad(nll.sum(), [hidden, weight])
    assert grads[0].dtype == hidden.dtype and grads[1].dtype == weight.dtype
    ref = _reference(hidden, weight, targets)
    torch.testing.assert_close(nll, ref, rtol=0.05, atol=0.1)
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), [hidden, weight]), strict=True):
        assert (a - b).norm() <= 0.05 * b.norm()


def test_chunk_rows_keep_a_chunk_near_its_byte_budget():
    assert chunk_rows(50258, 16 * 2**20) == 83
    assert chunk_rows(10**9) == 1


def test_token_sequence_from_hidden_with_leading_and_particle_dims():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 3, 5, D, generator=g, requires_grad=True)  # (P, B, T, D)
    weight = torch.randn(V, D, generator=g, requires_grad=True)  # (V, D)
    targets = torch.randint(V, (3, 5), generator=g)  # (B, T)
    targets[0, -1] = IGNORE_INDEX
    fused = TokenSequence.from_hidden(hidden, weight)
    full = TokenSequence(hidden @ weight.T)
    assert fused.batch_shape == full.batch_shape == (2, 3) and fused.event_shape == (5,)
    lp = fused.log_prob(targets)  # (P, B)
    torch.testing.assert_close(lp, full.log_prob(targets), rtol=1e-5, atol=1e-5)
    wide = fused.expand((4, 2, 3))
    torch.testing.assert_close(wide.log_prob(targets), full.expand((4, 2, 3)).log_prob(targets),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.logits, full.logits)
    assert fused.sample((6,)).shape == (6, 2, 3, 5)
    grads = torch.autograd.grad(lp.sum(), [hidden, weight])
    ref = torch.autograd.grad(full.log_prob(targets).sum(), [hidden, weight])
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _loss_and_grads(family, loss_fn):
    family.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in family.parameters() if p.grad is not None]


def test_ltm_loss_and_gradients_equal_full_logits(tiny_ltm, tokens):
    guide = LocalGaussianGuide()
    guide.reset(tiny_ltm.prior, tokens)
    guide.freeze_noise(tiny_ltm.prior, tokens)

    def loss():
        return LatentELBO().differentiable_loss(tiny_ltm.model, pyro_guide(guide, tiny_ltm.prior), tokens)

    fused = _loss_and_grads(tiny_ltm, loss)
    with MaterialisedLogits():
        full = _loss_and_grads(tiny_ltm, loss)
    torch.testing.assert_close(fused[0], full[0], rtol=1e-6, atol=1e-5)
    assert len(fused[1]) == len(full[1]) > 0
    for a, b in zip(fused[1], full[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_vanilla_loss_and_gradients_equal_full_logits(tokens):
    vanilla = VanillaDecoder.from_config(tiny_config(n_latent=0))

    def loss():
        return LatentELBO().differentiable_loss(vanilla.model, EmptyGuide(), tokens)

    fused = _loss_and_grads(vanilla, loss)
    with MaterialisedLogits():
        full = _loss_and_grads(vanilla, loss)
    torch.testing.assert_close(fused[0], full[0], rtol=1e-6, atol=1e-5)
    for a, b in zip(fused[1], full[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_inner_loop_restores_requires_grad_and_matches_full_logits(tiny_ltm, tokens):
    cfg = InnerLoopConfig(steps=3, reuse_noise=True)
    noise = torch.randn((tokens.shape[0],) + tuple(tiny_ltm.prior.event_shape))  # (B, N, D)
    tiny_ltm.prior.loc.requires_grad_(False)  # a frozen parameter stays frozen
    fused = fit_local(tiny_ltm, LocalGaussianGuide(), tokens, cfg, noise=noise)
    with MaterialisedLogits():
        full = fit_local(tiny_ltm, LocalGaussianGuide(), tokens, cfg, noise=noise)
    assert fused == pytest.approx(full, rel=1e-5)
    flags = {name: p.requires_grad for name, p in tiny_ltm.named_parameters()}
    assert flags.pop("prior.loc") is False and all(flags.values())
    assert all(p.grad is None for p in tiny_ltm.parameters())


def test_the_handler_scores_the_token_site_through_full_logits(tokens):
    from pyro import poutine

    vanilla = VanillaDecoder.from_config(tiny_config(n_latent=0))
    fused = poutine.trace(vanilla.model).get_trace(tokens).nodes["tokens"]["fn"]
    with MaterialisedLogits():
        full = poutine.trace(vanilla.model).get_trace(tokens).nodes["tokens"]["fn"]
    assert fused.hidden is not None and fused._logits is None  # no (B, T, V) tensor held
    assert full.hidden is None and full.logits.shape == tokens[:, 1:].shape + (37,)
