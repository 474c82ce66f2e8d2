"""Mixed precision: `--precision fp32|bf16|auto` as one `torch.autocast` context on CPU or CUDA.

Under bf16 the matrix multiplies run in bfloat16 while the master weights, the optimiser state,
the guide's local tensors, the log-probabilities (the token cross-entropy is computed in fp32 from
bf16 logits), the KL and every loss stay fp32. `auto` picks bf16 only where the hardware does
bf16 arithmetic natively (CUDA with bf16; a CPU with AMX or AVX512-BF16), else fp32. The output
head's products run in `ltm.models.low_precision_head` (bf16 GEMMs, the softmax and the sums in
fp32), and attention itself stays fp32 on a CPU without AMX (`ltm.core.hardware`).

    with autocast("bf16", torch.device("cpu")):
        result = optimizer.step(batch)
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ltm.core.errors import ConfigError
from ltm.core.hardware import CPU_BF16_FLAGS, cpu_bf16_flags  # noqa: F401 (re-exported)

aten = torch.ops.aten

PRECISIONS = ("fp32", "bf16", "auto")
EMULATED_BF16_ENV = "LTM_ALLOW_EMULATED_BF16"  # "1": allow bf16 on a CPU without bf16 instructions
# "fp32" or "bf16": what `auto` resolves to, whatever the hardware (bf16 without native support
# runs its products on the fp32 kernel): runs the test suite as it runs on the other kind of CPU.
AUTO_PRECISION_ENV = "LTM_AUTO_PRECISION"


def has_fast_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'fp32' or 'bf16' for `precision` on `device`; 'auto' picks bf16 where it is native, or what
    the environment variable LTM_AUTO_PRECISION says ('fp32' or 'bf16') where it is set.

    Raises:
        ConfigError: for an unknown name, or bf16 on hardware without bf16 (unless the environment
            variable LTM_ALLOW_EMULATED_BF16=1 asks for the emulation, to check numerics).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}.")
    fast = has_fast_bf16(device)
    if precision == "auto":
        forced = os.environ.get(AUTO_PRECISION_ENV)
        if forced:
            if forced not in ("fp32", "bf16"):
                raise ConfigError(f"{AUTO_PRECISION_ENV}={forced!r} must be fp32 or bf16 (or unset).")
            return forced
        return "bf16" if fast else "fp32"
    if precision == "bf16" and not fast and os.environ.get(EMULATED_BF16_ENV) != "1":
        what = "this CPU has neither AVX512-BF16 nor AMX" if device.type == "cpu" else f"{device} has no bf16"
        raise ConfigError(f"--precision bf16 needs native bf16 arithmetic and {what}; use --precision "
                          f"fp32 or auto (set {EMULATED_BF16_ENV}=1 to emulate it, for "
                          f"checking numbers only).")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision ('fp32': autocast off). On hardware without
    native bf16 (allowed by LTM_ALLOW_EMULATED_BF16=1), the bf16 matrix products run on the fp32
    kernel (`Fp32KernelForBf16`): the same numbers, at near fp32 speed instead of the slow emulation."""
    if precision == "fp32":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    if not has_fast_bf16(device):
        stack.enter_context(Fp32KernelForBf16())
    return stack


class Fp32KernelForBf16(TorchDispatchMode):
    """bf16 matrix products computed by the fp32 kernel and rounded back to bf16.

    A product of two bf16 numbers is exact in fp32 and native bf16 GEMMs accumulate in fp32, so
    this gives what bf16 hardware gives (up to summation order), for checking a run's numbers on
    a CPU whose own bf16 GEMM is a slow emulation.
    """

    OPS = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default}
    OUT_OPS = {aten.mm.out: aten.mm.default}  # written into `out` (the bf16 head's buffer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in self.OPS or func in self.OUT_OPS) and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            up = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 else a
                  for a in args]
            if func in self.OUT_OPS:
                out = kwargs.pop("out")
                return out.copy_(self.OUT_OPS[func](*up, **kwargs))
            return func(*up, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def compile_decoder(family: torch.nn.Module) -> None:
    """`torch.compile` each transformer block of the family's decoder in place (parameter names,
    and so checkpoints, stay as they are; the first steps pay the compile time)."""
    for block in family.decoder.blocks:
        block.compile()
