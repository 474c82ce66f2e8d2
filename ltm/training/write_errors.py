"""Why a file could not be written, in words: for one-sentence save errors.

torch and safetensors wrap the operating system's error in their own: torch's zip writer says only
"unexpected pos ...", safetensors "... (os error 28)". `RecordingWriter` keeps the `OSError` that
torch's writer swallowed, and `failure_reason` reads the reason from any of them.

    with open(path, "wb", buffering=0) as raw:
        out = RecordingWriter(raw)
        try:
            torch.save(state, out)
        except RuntimeError as err:
            print(failure_reason(out.error or err))  # "no space left on device"
"""

from __future__ import annotations

import errno
import os
import re

_OS_ERROR_CODE = re.compile(r"os error (\d+)")
# What the file system can refuse a write for; any other error is a bug, not a failed write.
WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.EIO}


class RecordingWriter:
    """A writable file wrapper that remembers the first `OSError` of a write (then re-raises it)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()


def failure_reason(err: BaseException) -> str | None:
    """The operating system's reason for a failed write ('no space left on device', 'file too
    large', 'disk quota exceeded', 'permission denied', ...), or None when `err` is not one of
    `WRITE_ERRORS` (then it is not a failed write but a bug)."""
    code = err.errno if isinstance(err, OSError) else None
    if not code:
        match = _OS_ERROR_CODE.search(str(err))
        code = int(match.group(1)) if match else None
    return os.strerror(code).lower() if code in WRITE_ERRORS else None
