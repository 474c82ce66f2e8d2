"""What the hardware is and does natively in bf16: read once from /proc/cpuinfo (or asked of CUDA).

Mixed precision (`ltm.training.precision`) decides from `cpu_bf16_flags` whether bf16 is native;
the attention layers ask `bf16_attention_pays` whether to run their kernel in bf16 or fp32 under
bf16 autocast (on a CPU with AVX512-BF16 but no AMX, bf16 attention ran slower than fp32).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native bf16 instruction sets among AVX512-BF16 and AMX-BF16 (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: ask oneDNN instead
        return ("onednn",) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ()
    flags = set(text.split("flags", 2)[1].split("\n", 1)[0].split()) if "flags" in text else set()
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def bf16_attention_pays(device: torch.device) -> bool:
    """Whether attention should run in bf16 under bf16 autocast on `device`: on CUDA, and on a CPU
    with AMX (or one whose flags cannot be read); not on a CPU without AMX, where torch's bf16
    attention kernels ran slower than fp32 (measured on AVX512-BF16: 5x in the backward)."""
    if device.type != "cpu":
        return True
    flags = cpu_bf16_flags()
    return "amx_bf16" in flags or "onednn" in flags
