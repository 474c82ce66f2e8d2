"""One process per run directory: an exclusive `fcntl.flock` on DIR/run.lock while it writes there.

A second training (or comparison) aimed at the same directory is refused with one sentence naming
the holder's PID and host, before it writes anything there. The kernel drops the lock when its
holder exits, however it exits, so a run killed with `kill -9` never blocks the next. On a file
system without `flock` (Lustre mounted with `noflock`) the run goes on unlocked, with a warning.

    RunLock("runs/x").check()          # fail fast, before any set-up work; creates nothing
    with RunLock("runs/x", "training run"):
        ...                            # only this process writes runs/x
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path

from ltm.core.errors import ConfigError, RunInUseError

LOCK_FILE = "run.lock"
log = logging.getLogger(__name__)
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOLCK)


class RunLock:
    """An exclusive lock on `directory` (created if missing), held from `acquire` to `release`.

    Args:
        directory: The run (or comparison) directory.
        what: What holds it, for messages ("training run", "comparison").
    """

    def __init__(self, directory: str | Path, what: str = "training run"):
        self.directory, self.what = Path(directory), what
        self._fd: int | None = None
        self._made: list[Path] = []  # folders `acquire` created, removed by a tidy release if empty

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check(self) -> None:
        """Raise `RunInUseError` if another process holds the lock now; takes and creates nothing."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except (FileNotFoundError, NotADirectoryError):
            return  # no holder has ever written here
        try:
            if self._try_lock(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def acquire(self) -> RunLock:
        """Take the lock (a no-op if this object holds it already).

        Raises:
            RunInUseError: naming the process that holds it and what to do.
            ConfigError: the directory's path names a file.
        """
        if self.held:
            return self
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"{self.directory} is a file, not a directory; choose another output "
                              f"directory.")
        self._made = [p for p in (self.directory, *self.directory.parents) if not p.exists()]
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._try_lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked or _same_file(fd, self.path):
                break
            os.close(fd)  # the file was replaced while we waited for it: lock the new one
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        holder = (f"PID {os.getpid()} on host {socket.gethostname()}, since {started}: "
                  f"{' '.join(sys.argv) or 'python'}\n")
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd
        return self

    def _try_lock(self, fd: int) -> bool:
        """Lock `fd` exclusively: True when locked, False on a file system without flock.

        Raises:
            RunInUseError: another process holds it.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            if holder.startswith(f"PID {os.getpid()} "):
                holder = f"this same process, {holder}: an earlier {self.what} here has not finished"
            raise RunInUseError(f"{self.directory} is in use by another {self.what} ({holder}); wait "
                                f"for it to finish or stop it, or choose another output directory."
                                ) from None
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
            log.warning(f"note: the file system of {self.directory} does not support flock "
                        f"({os.strerror(err.errno)}); running without the lock, so make sure no other "
                        f"process writes there.")
            return False

    def release(self, tidy: bool = False) -> None:
        """Let go of the lock (a no-op if not held). With `tidy`, remove the lock file and the
        folders `acquire` created, if nothing else was written into them (a start that failed
        leaves no trace); a process that opened the old lock file finds it replaced and retries."""
        if self._fd is None:
            return
        if tidy:
            self.path.unlink(missing_ok=True)
            for folder in self._made:
                try:
                    folder.rmdir()  # only empty folders
                except OSError:
                    break
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (it may have been removed and recreated)."""
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)
