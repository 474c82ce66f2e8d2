"""How the command-line tools run their work: one `error: ...` sentence and its exit status for a
user's mistake, and Pyro's argument checks off.

Only ltm's own user-error types (`ltm.core.errors.UserError`) are turned into one line; any other
exception is a bug (in ltm or in code the user named) and keeps its traceback. Pyro's shape and
support checks cost host synchronisations on a GPU at every inner step; the tools run without
them (the test suite runs the library with them on).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from ltm.core.errors import Preempted, UserError


def _pyro_checks_off():
    import pyro  # only the tools that run models load it (not ltm.prepare)

    return pyro.validation_enabled(False)


def report_user_errors(body: Callable[[], object], pyro_checks_off: bool = True) -> int:
    """Run a CLI's body and return 0; a user error prints its first line as `error: ...` and returns
    its exit status (2, or 1 for a failed save); a stop on a signal prints its one line and returns
    128 + the signal number.

    With LTM_DEBUG=1 a user error propagates with its traceback instead. `pyro_checks_off=False`
    leaves Pyro alone (and unimported), for a tool that runs no model.
    """
    try:
        with _pyro_checks_off() if pyro_checks_off else contextlib.nullcontext():
            body()
        return 0
    except Preempted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_status
    except UserError as err:
        if os.environ.get("LTM_DEBUG"):
            raise
        lines = str(err).strip().splitlines()  # one sentence: a loader's traceback text is dropped
        print(f"error: {lines[0] if lines else type(err).__name__}", file=sys.stderr)
        return err.exit_status
