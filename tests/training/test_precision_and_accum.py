"""Gradient accumulation equals one big batch; bf16 autocast keeps weights, KL and losses in fp32."""

from __future__ import annotations

import copy

import pytest
import torch

from ltm.core.errors import ConfigError
from ltm.inference import DualRateOptimizer, InnerLoopConfig, LocalGaussianGuide, PriorGuide, SlowConfig
from ltm.models import DecoderConfig, LatentThoughtModel
from ltm.training import precision
from ltm.training.precision import autocast, resolve_precision

CPU = torch.device("cpu")


def tiny_ltm() -> LatentThoughtModel:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, d_model=32)
    return LatentThoughtModel.from_config(cfg)


def batches(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 64, (8, 17), generator=g) for _ in range(n)]


def train(micro_batches: int, steps: list[torch.Tensor], guide=LocalGaussianGuide,
          **inner) -> tuple[dict, list]:
    model = tiny_ltm()
    opt = DualRateOptimizer(model, guide(), InnerLoopConfig(steps=3, lr=0.1, **inner),
                            SlowConfig(lr=1e-3, warmup_steps=0, decay_steps=10),
                            micro_batches=micro_batches)
    torch.manual_seed(5)
    results = [opt.step(b) for b in steps]
    return copy.deepcopy(model.state_dict()), results


@pytest.mark.parametrize("inner", [{}, {"reuse_noise": True, "accumulate_decoder_grads": True},
                                   {"guide": PriorGuide}])  # q = p: z drawn from the prior
def test_micro_batches_equal_one_batch(inner):
    whole, a = train(1, batches(), **inner)
    split, b = train(4, batches(), **inner)
    assert max((whole[k] - split[k]).abs().max().item() for k in whole) <= 1e-5
    for x, y in zip(a, b, strict=True):
        assert x.loss == pytest.approx(y.loss, abs=1e-5)
        assert x.inner_losses == pytest.approx(y.inner_losses, rel=1e-5)


def test_bf16_autocast_keeps_fp32_master_weights_and_losses():
    model = tiny_ltm()
    guide = LocalGaussianGuide()
    opt = DualRateOptimizer(model, guide, InnerLoopConfig(steps=2, lr=0.1), SlowConfig(warmup_steps=0))
    tokens = batches(1)[0]
    with autocast("bf16", CPU):
        result = opt.step(tokens)
        opt.fit_local(tokens)
        terms = opt.terms(tokens)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(t.dtype == torch.float32 for t in guide.locals.values())
    assert terms.reconstruction.dtype == terms.kl.dtype == torch.float32
    state = opt.optimizer.state_dict()["state"]
    assert all(v.dtype == torch.float32 for s in state.values() for k, v in s.items() if k != "step")
    assert torch.isfinite(torch.tensor(result.loss))
    with torch.no_grad():
        full = opt.terms(tokens)  # fp32 scoring of the same q (fresh noise): close to the bf16 one
    per_token = tokens[:, 1:].numel()
    # bf16 keeps 8 significant bits: each product is off by up to 2^-9 relatively, so logits of
    # size 1-3 move by ~0.01 and the per-token NLL by a few hundredths; the fresh noise draw moves
    # it as much again. 0.1 nats/token bounds both with room, and catches a loss computed in bf16.
    assert abs(full.elbo.sum().item() - terms.elbo.sum().item()) / per_token < 0.1


def test_auto_picks_bf16_only_on_native_hardware(monkeypatch):
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: False)
    monkeypatch.delenv(precision.EMULATED_BF16_ENV, raising=False)
    monkeypatch.delenv(precision.AUTO_PRECISION_ENV, raising=False)
    assert resolve_precision("auto", CPU) == "fp32"
    with pytest.raises(ConfigError, match="--precision bf16 needs native bf16"):
        resolve_precision("bf16", CPU)
    monkeypatch.setenv(precision.EMULATED_BF16_ENV, "1")
    assert resolve_precision("bf16", CPU) == "bf16"
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: True)
    assert resolve_precision("auto", CPU) == "bf16"
    with pytest.raises(ConfigError, match="not one of"):
        resolve_precision("fp16", CPU)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_step_on_cuda_stays_close_to_fp32():
    cuda = torch.device("cuda")
    losses = {}
    for name in ("fp32", "bf16"):
        model = tiny_ltm().to(cuda)
        opt = DualRateOptimizer(model, LocalGaussianGuide().to(cuda), InnerLoopConfig(steps=2, lr=0.1),
                                SlowConfig(warmup_steps=0))
        torch.manual_seed(0)
        with autocast(resolve_precision(name, cuda), cuda):
            losses[name] = opt.step(batches(1)[0].to(cuda)).loss
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.05)
