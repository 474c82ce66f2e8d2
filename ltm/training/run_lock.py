"""One process per run directory: an exclusive `fcntl.flock` on DIR/run.lock for the run's life.

A second training (or comparison) aimed at the same directory is refused with one sentence naming
the holder's PID and host, before it reads or writes anything there. The kernel drops the lock
when its holder exits, however it exits, so a run killed with `kill -9` never blocks the next.

    with RunLock("runs/x", "training run"):
        ...  # only this process writes runs/x
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import sys
from pathlib import Path

from ltm.core.errors import RunInUseError

LOCK_FILE = "run.lock"


class RunLock:
    """An exclusive lock on `directory` (created if missing), held from `acquire` to `release`.

    Args:
        directory: The run (or comparison) directory.
        what: What holds it, for messages ("training run", "comparison").
    """

    def __init__(self, directory: str | Path, what: str = "training run"):
        self.directory, self.what = Path(directory), what
        self._file = None
        self._made: list[Path] = []  # folders this lock created, removed again if left empty

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock (a no-op if this object holds it already).

        Raises:
            RunInUseError: naming the process that holds it and what to do.
        """
        if self.held:
            return self
        missing = [p for p in (self.directory, *self.directory.parents) if not p.exists()]
        self.directory.mkdir(parents=True, exist_ok=True)
        self._made = missing
        file = open(self.path, "a+")  # noqa: SIM115 (held open for the run's life)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise RunInUseError(f"{self.directory} is in use by another {self.what} ({holder}); wait "
                                f"for it to finish or stop it, or choose another output directory."
                                ) from None
        file.seek(0)
        file.truncate()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        file.write(f"PID {os.getpid()} on host {socket.gethostname()}, since {started}: "
                   f"{' '.join(sys.argv) or 'python'}\n")
        file.flush()
        self._file = file
        return self

    def release(self, tidy: bool = False) -> None:
        """Let go of the lock (a no-op if not held). With `tidy`, remove the lock file and the
        folders `acquire` created, if nothing else was written into them (a run that failed to
        start leaves no trace)."""
        if self._file is None:
            return
        if tidy:
            self.path.unlink(missing_ok=True)
            for folder in self._made:
                try:
                    folder.rmdir()  # only empty folders
                except OSError:
                    break
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
