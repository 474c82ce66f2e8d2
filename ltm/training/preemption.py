"""Stop cleanly on SIGTERM or SIGINT: finish the step, save, and exit 143 or 130.

Cluster schedulers (SLURM, Kubernetes) preempt a job with SIGTERM and kill it a little later; a
person stops one with Ctrl-C (SIGINT). While `StopSignals` is active, the first of these signals
only records a request, which the training loop reads after each step; a second one aborts at
once (`KeyboardInterrupt`, or `SystemExit(143)` for SIGTERM). One preemption often arrives twice
(SLURM signals every process of the job, and torchrun forwards its own SIGTERM to its workers), so
a SIGTERM within `SAME_PREEMPTION_S` seconds of the first counts as the same request. A signal the
process was started to ignore (SIGINT of a background job) stays ignored.

    with StopSignals() as stop:
        while training:
            step()
            if stop.requested:
                save(); raise Preempted(...)
"""

from __future__ import annotations

import signal
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SAME_PREEMPTION_S = 5.0


class StopSignals:
    """Turn the first SIGTERM/SIGINT into a stop request; a second one aborts at once.

    Handlers can only be installed in the main thread; elsewhere this does nothing (the signals
    keep their usual effect).

    Attributes:
        signum: The first signal received, or None.
    """

    def __init__(self):
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            return
        if signum == signal.SIGTERM == self.signum and now - self._first_at < SAME_PREEMPTION_S:
            return  # the same preemption, delivered twice
        if signum == signal.SIGINT:  # a second signal: abort now
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
