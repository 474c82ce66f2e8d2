"""Peak resident memory of a stretch of work in this process (Linux /proc), shared by the benches.

    base = rss_kib(); exact = reset_peak(); work(); peak = peak_kib() if exact else maxrss_kib()

VmHWM (the kernel's high-water mark of the resident set) is reset to the current resident set by
writing 5 to /proc/self/clear_refs, after freed heap is returned to the system (`malloc_trim`).
`ru_maxrss` cannot serve in a child process: Linux carries the parent's high-water mark across exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_kib() -> int:
    """The current resident set (KiB)."""
    return _status_kib("VmRSS")


def peak_kib() -> int:
    """The peak resident set since the last `reset_peak` (KiB)."""
    return _status_kib("VmHWM")


def maxrss_kib() -> int:
    """`ru_maxrss` in KiB (the process's peak since it started; bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def reset_peak() -> bool:
    """Return freed heap to the system and reset VmHWM to the current resident set; False where
    /proc/self/clear_refs cannot be written."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
