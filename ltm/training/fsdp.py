"""Sharded data-parallel training (`--fsdp`): PyTorch FSDP2 over the ranks of a torchrun launch.

    torchrun --standalone --nproc-per-node 2 -m ltm.train --fsdp

`shard_family` applies `fully_shard` to each decoder block, one unit each, then to the family (the
root unit: token embedding, final norm, an untied head and a family's own parts). Each rank then
holds 1/W of those weights, of their gradients and of AdamW's moments, and all-gathers a unit's
weights just before its forward and backward. Left whole on every rank, and summed by hand as
under DDP (`DistContext.sum_grads`): the prior's parameters (the guide calls the prior outside the
family's forward), 0-dim parameters (FSDP2 cannot shard them) and the guide's global parameters.

The batch is split, the noise drawn and the losses scaled exactly as under DDP
(`ltm.training.distributed`), so `--fsdp` trains the weights one process trains. Gradients: every
backward pass of a step (the inner loop's under `--accumulate-decoder-grads`, each micro-batch's)
accumulates unsynced, and the step's last one reduce-scatters the sum once (`ShardedReducer`,
the counterpart of `DistContext.sum_grads`). The losses are already divided by the global token
count, so the reduction is a SUM (gloo has no AVG reduce-scatter anyway).

Checkpoints keep the one-process format: `full_model_state` and `full_optimizer_state` gather the
shards on rank 0 (collectives: every rank calls them), and `shard_like` / `shard_optimizer_state`
cut each rank's shard from the full tensors every rank reads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor, distribute_tensor

from ltm.models.family import Family
from ltm.training.distributed import DistContext

# The family's entry points that run its decoder: each all-gathers the root unit like a forward.
FORWARD_METHODS = ("model", "full_logits", "initial_latents")


def replicated_params(family: Family) -> set[nn.Parameter]:
    """The family's parameters FSDP leaves whole on every rank: the prior's and the 0-dim ones."""
    kept = {p for p in family.prior.parameters()}
    return kept | {p for p in family.parameters() if p.dim() == 0}


def shard_family(family: Family, dist: DistContext) -> ShardedReducer:
    """Shard `family` in place over the ranks of `dist`: one FSDP2 unit per decoder block, then the
    root; returns the reducer the slow step sums gradients with.

    Build the slow optimiser after this call: sharding replaces the parameters with DTensors.
    """
    mesh = init_device_mesh(next(family.parameters()).device.type, (dist.world_size,))
    kept = replicated_params(family)
    units = []
    for block in family.decoder.blocks:
        fully_shard(block, mesh=mesh, ignored_params=kept)
        units.append(block)
    fully_shard(family, mesh=mesh, ignored_params=kept)
    units.append(family)
    for name in FORWARD_METHODS:
        register_fsdp_forward_method(family, name)
    for unit in units:
        unit.set_force_sum_reduction_for_comms(True)  # gloo has no AVG or pre-multiplied sum
        unit.set_gradient_divide_factor(1.0)  # a plain SUM: the losses are divided already
        unit.set_requires_gradient_sync(False, recurse=False)  # until the step's last backward
    return ShardedReducer(dist, units)


class ShardedReducer:
    """What `DistContext` does for the slow step, for a sharded family: the loss sums, and the
    gradients reduce-scattered by FSDP in the step's last backward pass (`last_backward`).

    Args:
        dist: The run's process group.
        units: The FSDP modules (the blocks, then the root).
    """

    def __init__(self, dist: DistContext, units: list[FSDPModule]):
        self.dist, self.units = dist, units

    lockstep = True  # every rank runs every held-out batch, rows or none (`local_batches`)

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    def sum_(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        return self.dist.sum_(tensor, what)

    def gather(self, value, what: str) -> list:
        return self.dist.gather(value, what)

    def last_backward(self) -> None:
        """The next backward pass is the step's last: it reduce-scatters the gradients."""
        for unit in self.units:
            unit.set_requires_gradient_sync(True, recurse=False)

    def sum_grads(self, params: list[nn.Parameter]) -> None:
        """Sum the replicated parameters' gradients by hand (the sharded ones were reduce-scattered
        in the last backward); later backward passes accumulate unsynced again."""
        for unit in self.units:
            unit.set_requires_gradient_sync(False, recurse=False)
        whole = [p for p in params if not isinstance(p, DTensor)]
        if whole:
            self.dist.sum_grads(whole)

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Scale the gradients to a global 2-norm of at most `max_norm`, as
        `torch.nn.utils.clip_grad_norm_` on one process; returns the norm before clipping."""
        grads = [p.grad for p in params if p.grad is not None]
        local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
        sharded = sum((g.float().square().sum() for g, full in zip(local, grads, strict=True)
                       if isinstance(full, DTensor)), torch.zeros((), device=local[0].device))
        whole = sum((g.float().square().sum() for g, full in zip(local, grads, strict=True)
                     if not isinstance(full, DTensor)), torch.zeros((), device=local[0].device))
        self.dist.sum_(sharded, "the gradient-norm all-reduce")
        norm = (sharded + whole).sqrt()  # () the global norm
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(local, coef)
        return norm


def full_model_state(module: nn.Module, main: bool) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with each shard gathered whole, on the CPU; rank 0 keeps the tensors
    (`main`), the other ranks an empty dict. A collective: every rank calls it. Tied names stay
    one tensor (the checkpoint saves it once)."""
    out, gathered = {}, {}
    for name, t in module.state_dict().items():
        if isinstance(t, DTensor):
            key = (t.to_local().untyped_storage().data_ptr(), tuple(t.shape))
            if key not in gathered:
                full = t.full_tensor()
                gathered[key] = full.cpu() if main else None
            t = gathered[key]
        if main:
            out[name] = t
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer, main: bool) -> dict | None:
    """`optimizer.state_dict()` with sharded moments gathered whole on the CPU (rank 0; None on
    the others): the one-process format. A collective: every rank calls it."""
    state = optimizer.state_dict()  # its per-parameter dicts are the optimiser's own: copy them
    per_param = {}
    for index in sorted(state["state"]):
        per_param[index] = {}
        for key, value in state["state"][index].items():
            if isinstance(value, DTensor):
                full = value.full_tensor()  # every rank takes part in the all-gather
                value = full.cpu() if main else None
            per_param[index][key] = value
    return {**state, "state": per_param} if main else None


def shard_like(own: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full` laid out as `own` (a DTensor), or `full` for a plain tensor."""
    if not isinstance(own, DTensor):
        return full
    full = full.to(device=own.device, dtype=own.dtype)
    return distribute_tensor(full, own.device_mesh, own.placements, src_data_rank=None)


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `load_state_dict` of a one-process state: cut each sharded parameter's moments to
    this rank's shard (no communication: every rank read the whole state)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if (isinstance(p, DTensor) and isinstance(value, torch.Tensor)
                        and not isinstance(value, DTensor) and value.shape == p.shape and value.dim()):
                    state[key] = shard_like(p, value)
