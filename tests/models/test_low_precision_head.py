"""The bf16 fused cross-entropy head (`ltm.models.low_precision_head`): close to fp32, fp32 untouched,
its packed weight refreshed by every weight update, and usable by the inner loop.

Every test here runs torch's bf16 kernels (native, or emulated on a CPU without bf16: small sizes
keep that fast) or pins fp32; none depends on which the machine has.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltm.core.sites import IGNORE_INDEX
from ltm.inference import InnerLoopConfig, LocalGaussianGuide, fit_local
from ltm.models import attention, fused_cross_entropy, low_precision_head
from ltm.models.fused_cross_entropy import fused_linear_cross_entropy
from ltm.training import precision
from tests.conftest import tiny_config

N, D, V = 60, 32, 301
ROWS = 16  # does not divide N
CPU = torch.device("cpu")


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _inputs(seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(N, D, generator=g) * scale).requires_grad_()  # (N, D)
    weight = (torch.randn(V, D, generator=g) * 0.3).requires_grad_()  # (V, D)
    targets = torch.randint(V, (N,), generator=g)  # (N,)
    targets[::7] = IGNORE_INDEX
    return hidden, weight, targets


def _reference(hidden, weight, targets):
    """fp64 cross-entropy over full logits."""
    logits = hidden.double() @ weight.double().T  # (N, V)
    return F.cross_entropy(logits, targets, reduction="none", ignore_index=IGNORE_INDEX)  # (N,)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(autouse=True)
def _fresh_cache():
    low_precision_head.clear_packed()
    yield
    low_precision_head.clear_packed()


@pytest.mark.parametrize("need", ["hidden", "weight", "both"])
def test_loss_and_gradients_match_fp32_within_bf16_tolerance(need):
    hidden, weight, targets = _inputs()
    hidden.requires_grad_(need != "weight")
    weight.requires_grad_(need != "hidden")
    wrt = [t for t in (hidden, weight) if t.requires_grad]
    with bf16():
        nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)  # (N,)
    assert nll.dtype == torch.float32
    ref = _reference(hidden, weight, targets)
    # bf16 logits are off by ~2^-9 of their size (|logit| ~ 2 here): a few hundredths at most
    torch.testing.assert_close(nll.double(), ref.detach(), rtol=0, atol=0.03)
    assert torch.all(nll[targets == IGNORE_INDEX] == 0)
    got = torch.autograd.grad(nll.sum(), wrt)
    want = torch.autograd.grad(ref.sum(), wrt)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        assert _rel(a, b) < 0.02
    if hidden.requires_grad:
        assert torch.all(got[0][targets == IGNORE_INDEX] == 0)


def test_scoring_without_gradients_takes_the_log_sum_exp_in_fp32():
    hidden, weight, targets = _inputs()
    with torch.no_grad(), bf16():
        nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)  # (N,)
    logits = (hidden.bfloat16() @ weight.bfloat16().T).float()  # (N, V): the same bf16 logits
    exact = F.cross_entropy(logits, targets, reduction="none", ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(nll, exact, rtol=1e-5, atol=1e-5)


def test_a_target_too_unlikely_for_bf16_is_scored_exactly():
    hidden, weight, targets = _inputs()
    targets[1] = 5
    with torch.no_grad():
        weight[5] = -40 * hidden[1] / hidden[1].norm()  # its logit ~ -40 |h|: p below bf16's range
    with bf16():
        nll = fused_linear_cross_entropy(hidden, weight, targets, ROWS)  # (N,)
    ref = _reference(hidden, weight, targets).detach()
    assert ref[1] > 150
    assert torch.isfinite(nll).all()
    assert nll[1].item() == pytest.approx(ref[1].item(), rel=0.01)


def test_fp32_path_never_enters_the_bf16_head(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the bf16 head ran in fp32")

    monkeypatch.setattr(low_precision_head, "low_precision_forward", refuse)
    hidden, weight, targets = _inputs()
    before = fused_cross_entropy.chunk_rows(V)
    for wrt in ([hidden], [weight], [hidden, weight]):
        nll = fused_linear_cross_entropy(hidden, weight, targets)  # default rows: fp32's
        torch.autograd.grad(nll.sum(), wrt)
    assert fused_cross_entropy.chunk_rows(V) == before == fused_cross_entropy.CHUNK_BYTES // (4 * V)
    with torch.no_grad():
        fused_linear_cross_entropy(hidden, weight, targets)


def test_packed_weight_is_reused_until_the_weight_changes():
    weight = torch.nn.Parameter(torch.randn(V, D))
    first = low_precision_head.packed(weight)
    assert first.dtype == torch.bfloat16
    assert low_precision_head.packed(weight) is first  # same version: no new conversion
    opt = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.randn(V, D)
    opt.step()  # in place: bumps the version
    second = low_precision_head.packed(weight)
    assert second is not first
    assert torch.equal(second, weight.detach().bfloat16())
    with torch.no_grad():
        weight.mul_(2)
    assert torch.equal(low_precision_head.packed(weight), weight.detach().bfloat16())
    other = torch.randn(V, D)  # another weight of the same shape takes the slot
    assert torch.equal(low_precision_head.packed(other), other.bfloat16())


def test_loss_after_an_optimizer_step_uses_the_new_weight():
    hidden, weight, targets = _inputs()
    weight = torch.nn.Parameter(weight.detach())
    opt = torch.optim.SGD([weight], lr=1.0)
    with bf16():
        loss = fused_linear_cross_entropy(hidden.detach(), weight, targets, ROWS).sum()
    loss.backward()
    opt.step()
    with bf16():
        cached = fused_linear_cross_entropy(hidden.detach(), weight, targets, ROWS)
    low_precision_head.clear_packed()
    with bf16():
        fresh = fused_linear_cross_entropy(hidden.detach(), weight, targets, ROWS)
    assert torch.equal(cached, fresh)
    assert cached.sum() < loss  # the step lowered the loss it was taken on


def test_inner_loop_converts_the_weight_once_and_tracks_fp32(monkeypatch):
    model = tiny_config(vocab_size=97)
    from ltm.models import LatentThoughtModel

    ltm = LatentThoughtModel.build(model, "standard_normal")
    tokens = torch.randint(97, (4, 17))  # (B, T+1)
    noise = torch.randn(4, model.n_latent, model.d_latent)  # (B, N, D)
    cfg = InnerLoopConfig(steps=4, lr=0.1, reuse_noise=True)
    conversions = []
    real = low_precision_head._PackedWeight.get

    def counting(self, weight, dtype):
        before = self.value
        out = real(self, weight, dtype)
        if out is not before:
            conversions.append(weight.shape)
        return out

    monkeypatch.setattr(low_precision_head._PackedWeight, "get", counting)
    fp32 = fit_local(ltm, LocalGaussianGuide(), tokens, cfg, noise=noise)
    assert conversions == []
    with bf16():
        low = fit_local(ltm, LocalGaussianGuide(), tokens, cfg, noise=noise)
    assert conversions == [(97, model.d_model)]  # once for K=4 calls of the head
    assert all(p.grad is None for p in ltm.parameters())
    per_token = tokens[:, 1:].numel()
    for a, b in zip(low, fp32, strict=True):
        assert abs(a - b) / per_token < 0.05


def test_emulated_bf16_gives_the_native_numbers(monkeypatch):
    """Where bf16 is not native, `precision.autocast` runs the head's products (mm.out included) on
    the fp32 kernel: the same numbers up to summation order."""
    hidden, weight, targets = _inputs()
    with bf16():
        native = fused_linear_cross_entropy(hidden, weight, targets, ROWS)
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: False)
    low_precision_head.clear_packed()
    with precision.autocast("bf16", CPU):
        emulated = fused_linear_cross_entropy(hidden, weight, targets, ROWS)
    torch.testing.assert_close(emulated, native, rtol=0, atol=0.02)


@pytest.mark.parametrize("pays", [False, True])
def test_attention_runs_fp32_where_bf16_attention_does_not_pay(monkeypatch, pays):
    monkeypatch.setattr(attention, "bf16_attention_pays", lambda device: pays)
    q, k, v = (torch.randn(2, 2, 5, 8).bfloat16() for _ in range(3))
    with bf16():
        y = attention.attend(q, k, v, is_causal=True)
    assert y.dtype == (torch.bfloat16 if pays else torch.float32)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(y.float(), ref, rtol=0.02, atol=0.02)
    assert attention.attend(q.float(), k.float(), v.float(), is_causal=True).dtype == torch.float32
