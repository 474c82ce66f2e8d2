"""Training cost of a run, measured: parameters and the FLOPs of one dual-rate step.

The step is run once on a separately built model and guide (never the run's own), inside a fork of
every RNG (torch, Python, numpy: Pyro's), under `torch.utils.flop_counter.FlopCounterMode`, on the
first training batch. Matrix multiplies and attention are counted (forward and backward, the inner
loop included); element-wise work is not. Causal attention is counted as full T x T, as the
counter does for every attention kernel.
"""

from __future__ import annotations

import torch
from pyro.util import get_rng_state, set_rng_state
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from ltm.inference import DualRateOptimizer
from ltm.training.build import build_model, build_run_guide


def _register_cpu_attention() -> None:
    """CPU's fused attention kernels, which the counter does not know, counted like the CUDA ones."""
    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(fwd)
        def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)
    if bwd is not None and bwd not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(bwd)
        def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                 **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                         value_shape)


_register_cpu_attention()


def _measure(cfg, vocab_size: int, batch: torch.Tensor, inner_steps: int) -> tuple[int, int]:
    """(parameters, FLOPs) of one training step with `inner_steps` inner steps."""
    model = build_model(cfg, vocab_size)
    guide = build_run_guide(cfg, model)
    opt = DualRateOptimizer(model, guide, cfg.inner_config(inner_steps), cfg.slow_config(),
                            num_particles=cfg.num_particles)
    with FlopCounterMode(display=False) as counter:
        opt.step(batch)
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops())


def step_cost(cfg, vocab_size: int, batch: torch.Tensor) -> dict:
    """{"params", "flops_per_step", "training_flops"} of `cfg`'s training steps on `batch` (B, T+1).

    Builds the run's model, guide and optimiser afresh (so it also checks that they build), and
    leaves every global RNG as it found it. With early inference (`early_inner_steps`), its steps
    are measured apart and `training_flops` counts each phase with its own step.
    """
    saved = get_rng_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            params, flops = _measure(cfg, vocab_size, batch, cfg.inner.steps)
            early = min(cfg.early.until, cfg.max_steps) if cfg.early.steps else 0
            early_flops = _measure(cfg, vocab_size, batch, cfg.early.steps)[1] if early else 0
    finally:
        set_rng_state(saved)
    return {"params": int(params), "flops_per_step": flops,
            "training_flops": early * early_flops + (cfg.max_steps - early) * flops}


def staged_step_cost(cfg, vocab_size: int, stage_batches: list[torch.Tensor], stage_at) -> dict:
    """`step_cost` for a run whose blocks change with a curriculum (Coconut's stages): each stage's
    step measured on a batch of that stage, `training_flops` summing each stage's steps at its own
    cost; `flops_per_step` is the last stage's.

    Args:
        stage_batches: A batch (B, T+1) of each stage 0..S.
        stage_at: The stage of a training step (`ReasoningCorpus.stage_at`).
    """
    costs = [step_cost(cfg, vocab_size, batch) for batch in stage_batches]
    steps = [0] * len(costs)
    for step in range(cfg.max_steps):
        steps[stage_at(step)] += 1
    return {"params": costs[0]["params"], "flops_per_step": costs[-1]["flops_per_step"],
            "training_flops": sum(n * c["flops_per_step"] for n, c in zip(steps, costs, strict=True)),
            "stage_flops_per_step": [c["flops_per_step"] for c in costs]}
