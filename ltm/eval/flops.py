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


def step_cost(cfg, vocab_size: int, batch: torch.Tensor) -> dict:
    """{"params", "flops_per_step"} of one training step of `cfg` on `batch` (B, T+1).

    Builds the run's model, guide and optimiser afresh (so it also checks that they build), and
    leaves every global RNG as it found it.
    """
    saved = get_rng_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(cfg, vocab_size)
            guide = build_run_guide(cfg)
            opt = DualRateOptimizer(model, guide, cfg.inner_config(), cfg.slow_config(),
                                    num_particles=cfg.num_particles)
            params = sum(p.numel() for p in model.parameters())
            with FlopCounterMode(display=False) as counter:
                opt.step(batch)
    finally:
        set_rng_state(saved)
    return {"params": int(params), "flops_per_step": int(counter.get_total_flops())}
