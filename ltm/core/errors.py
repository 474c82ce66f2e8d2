"""The errors a user can cause and fix: the command-line tools print them as one sentence."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user error in a config file, a flag value or a field combination (printed as one sentence)."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, incomplete, corrupt, or built for another model."""


class LostRankError(RuntimeError):
    """Another process of a data-parallel run stopped answering (killed, crashed or timed out)."""
