"""Data-parallel training under `torchrun`: the process group, each rank's share of a batch, and
the slow step's gradient all-reduce.

    torchrun --nproc-per-node 2 -m ltm.train --batch-size 32

The global batch (`--batch-size`) is what one process would train on; rank r of W takes rows
[r B/W, (r+1) B/W) of every global batch, in the one global order. The inner loop fits each
sequence's posterior on its own rank (no communication); the slow step's gradients are summed
over the ranks once per optimiser step (each rank's loss is already divided by the global token
count), after any micro-batches of `--grad-accum`, as DDP's `no_sync` would. All ranks share one
seed, and each Gaussian draw is made for the whole global batch and sliced (`ShardNoise`), so a
sequence gets the same noise whatever the world size: two processes train the same weights as one.

DDP's own reducer is not used because it hooks every gradient accumulation, and the published
mode (`--accumulate-decoder-grads`) accumulates decoder gradients inside the inner loop.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ltm.core.errors import ConfigError, LostRankError

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: rank, world size, the device it uses.

    Attributes:
        rank: This process's global rank (0 on a single process).
        world_size: Processes in the run (1 on a single process).
        local_rank: Rank on this node (selects the GPU).
        backend: The process group's backend, or None on a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    @property
    def lockstep(self) -> bool:
        """False: a process with no rows of a held-out batch skips it (FSDP's reducer says True)."""
        return False

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of `batch_size` sequences (a multiple of the world
        size in training; shares differ by at most one row otherwise)."""
        w = self.world_size
        return slice(self.rank * batch_size // w, (self.rank + 1) * batch_size // w)

    def barrier(self, what: str) -> None:
        """Wait for every rank (no-op on one process)."""
        if self.enabled:
            with collective(what):
                dist.barrier()

    def sum_(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """All-reduce `tensor` in place by summation over the ranks (no-op on one process); a CPU
        tensor travels through this rank's GPU under nccl."""
        if not self.enabled:
            return tensor
        on_wire = tensor.cuda() if self.backend == "nccl" and tensor.device.type == "cpu" else tensor
        with collective(what):
            dist.all_reduce(on_wire)
        if on_wire is not tensor:
            tensor.copy_(on_wire)
        return tensor

    def gather(self, value, what: str) -> list:
        """Every rank's picklable `value` (tensors go through the CPU), in rank order."""
        if not self.enabled:
            return [value]
        out = [None] * self.world_size
        with collective(what):
            dist.all_gather_object(out, _to_cpu(value))
        return out

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over the ranks in one flat buffer; a parameter no rank
        gave a gradient keeps `.grad = None` (so AdamW skips it as on one process)."""
        if not self.enabled:
            return
        ref = params[0]
        has = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        flat = torch.cat([has] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                  for p in params])  # (P + sum numel,)
        self.sum_(flat, "the slow step's gradient all-reduce")
        offset = len(params)
        for i, p in enumerate(params):
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone() if flat[i] > 0 else None
            offset += n

    def last_backward(self) -> None:
        """Nothing to do: `sum_grads` sums after the step's backward passes (FSDP's reducer, which
        reduces inside the last one, acts here)."""

    def clip_grad_norm_(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """`torch.nn.utils.clip_grad_norm_` of the summed (so identical) gradients."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _to_cpu(value):
    """`value` with its tensors moved to the CPU (lists, tuples and dicts followed)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def collective(what: str):
    """Turn a collective's failure (a rank killed or hung) into one clear `LostRankError`."""
    try:
        yield
    except (RuntimeError, dist.DistError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]  # gloo's source location off
        raise LostRankError(f"lost contact with another process of the run during {what} ({first}); "
                            f"the last checkpoint is intact: restart the run with --resume auto.") from None


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def check_world(batch_size: int, grad_accum: int, world_size: int, fsdp: bool = False) -> None:
    """Refuse a global batch that does not split evenly over the ranks and micro-batches, and
    `--fsdp` (`fsdp`) on a single process, which has nothing to shard over.

    Raises:
        ConfigError: naming the batch size, the world size and what to do.
    """
    if fsdp and world_size < 2:
        raise ConfigError("--fsdp shards the model over the processes of a torchrun launch, and this "
                          "run is one process; launch it with torchrun --nproc-per-node N (N >= 2) "
                          "or drop --fsdp.")
    if grad_accum < 1:
        raise ConfigError(f"--grad-accum must be at least 1, got {grad_accum}.")
    if batch_size % world_size:
        raise ConfigError(f"the global batch --batch-size {batch_size} does not split evenly over "
                          f"{world_size} processes (torchrun world size); use a multiple of {world_size}.")
    per_rank = batch_size // world_size
    if per_rank % grad_accum:
        raise ConfigError(f"each process's {per_rank} sequences (--batch-size {batch_size} over "
                          f"{world_size} processes) do not split into --grad-accum {grad_accum} equal "
                          f"micro-batches; use a --batch-size that is a multiple of "
                          f"{world_size * grad_accum}.")


def check_device(device: str) -> torch.device:
    """The torch device `device` names, checked to exist here.

    Raises:
        ConfigError: for a name torch does not know, or a GPU that is not visible.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} needs a CUDA GPU and none is visible; use --device cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible.")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: ltm runs on cpu or cuda.")
    return dev


def init_distributed(device: str, backend: str = "auto", timeout_s: float = 300.0
                     ) -> tuple[DistContext, torch.device]:
    """Join torchrun's process group, if there is one, and pick this rank's device.

    Args:
        device: The run's device ('cpu', 'cuda'); under CUDA rank r takes cuda:LOCAL_RANK.
        backend: 'auto' (nccl on CUDA, gloo on CPU), 'gloo' or 'nccl'.
        timeout_s: How long a collective waits for a silent rank before failing.

    Raises:
        ConfigError: for an unknown backend, or nccl without CUDA.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--dist-backend '{backend}' is not one of {', '.join(BACKENDS)}.")
    rank, world, local = torchrun_world()
    dev = check_device(device)
    if backend == "nccl" and (dev.type != "cuda" or not torch.cuda.is_available()):
        raise ConfigError(f"--dist-backend nccl needs CUDA GPUs, but the run's device is {device}"
                          f"{'' if torch.cuda.is_available() else ' and no GPU is visible'}; use "
                          f"--dist-backend gloo (or auto) on the CPU.")
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world == 1:
        return DistContext(), dev
    chosen = backend if backend != "auto" else ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(chosen, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if chosen == "nccl" else None)
    return DistContext(rank, world, local, chosen), dev
