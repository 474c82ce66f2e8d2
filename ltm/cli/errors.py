"""How the command-line tools report a user's mistake: one `error: ...` sentence, exit status 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ltm.core.errors import CheckpointError, ConfigError, LostRankError

USER_ERRORS = (ConfigError, CheckpointError, ValueError, FileNotFoundError, FloatingPointError,
               LostRankError)


def report_user_errors(body: Callable[[], object]) -> int:
    """Run a CLI's body and return 0; a user error prints its first line as `error: ...`, returns 2.

    With LTM_DEBUG=1 the error propagates with its traceback instead.
    """
    try:
        body()
        return 0
    except USER_ERRORS as err:
        if os.environ.get("LTM_DEBUG"):
            raise
        lines = str(err).strip().splitlines()  # one sentence: a loader's traceback text is dropped
        print(f"error: {lines[0] if lines else type(err).__name__}", file=sys.stderr)
        return 2
