"""The errors a user can cause and fix: the command-line tools print them as one sentence.

Every one derives from `UserError`; anything else that escapes a tool is a bug in ltm or in the
user's own code and keeps its traceback. Each subclass also derives from the built-in type a
caller would catch in plain Python (`ValueError`, `FileNotFoundError`, ...).
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors a user causes and can fix; a CLI prints `error: <first line>`.

    Attributes:
        exit_status: The status the command-line tools exit with.
    """

    exit_status: int = 2


class ConfigError(UserError, ValueError):
    """A user error in a config file, a flag value or a field combination (printed as one sentence)."""


class DataError(UserError, ValueError):
    """Data that cannot be used: empty, unreadable, in another encoding, too short, or malformed."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, incomplete, corrupt, or built for another model."""


class UntrustedCodeError(CheckpointError):
    """A checkpoint names code (a `module:Class` path) that loading it would import and run."""


class CheckpointSaveError(UserError, OSError):
    """A checkpoint or run file could not be written (no space, file too large, permissions); the
    previous checkpoint is intact."""

    exit_status = 1


class RunInUseError(UserError):
    """Another process holds the run directory's lock."""


class DivergedError(UserError, FloatingPointError):
    """A loss or gradient became NaN or infinite; the message names the learning rate to lower."""


class LostRankError(UserError, RuntimeError):
    """Another process of a data-parallel run stopped answering (killed, crashed or timed out)."""


class Preempted(Exception):  # noqa: N818 (a request to stop, not a fault)
    """Training stopped on a signal (SIGTERM, SIGINT) after saving a checkpoint at the current step.

    Attributes:
        signum: The signal received.
        step: The step saved.
        exit_status: 128 + signum, as a shell reports a process ended by that signal (143, 130).
    """

    def __init__(self, signum: int, step: int, message: str):
        super().__init__(message)
        self.signum, self.step = signum, step
        self.exit_status = 128 + signum
