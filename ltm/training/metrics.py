"""The run's `metrics.jsonl`: one JSON record per training step or validation.

Every line is strict JSON (RFC 8259): a value that is NaN or infinite is written as null, so any
JSON reader (not only Python's) can read the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ltm.core.errors import CheckpointSaveError
from ltm.training.write_errors import failure_reason

METRICS_FILE = "metrics.jsonl"


def strict_json(value):
    """`value` with every float that is NaN or infinite replaced by None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSON lines at `path`, one record per step or evaluation.

    Attributes:
        mirrors: Loggers (`ltm.training.run_loggers`) that get every record written as well.
    """

    def __init__(self, path: Path):
        self.path = path
        self.mirrors: list = []

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after `step` (left by a run that went on past its last checkpoint)."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut short when a run was killed
                continue
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._guarded(lambda: tmp.write_text("".join(line + "\n" for line in kept)))
        os.replace(tmp, self.path)

    def reset(self) -> None:
        """Start the file afresh (a new run)."""
        self._guarded(lambda: self.path.write_text(""))

    def write(self, record: dict) -> None:
        """Append `record` as one line of strict JSON; a write that fails leaves the file as it was.

        Raises:
            CheckpointSaveError: when the file cannot be written (no space, a size limit), in one
                sentence; the checkpoints are untouched.
        """
        line = (json.dumps(strict_json(record), allow_nan=False) + "\n").encode()

        def append() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab", buffering=0) as f:
                size = f.tell()
                try:
                    f.write(line)
                except OSError:
                    f.truncate(size)  # no half line
                    raise
        self._guarded(append)
        for mirror in self.mirrors:
            mirror.write(record)

    def close_mirrors(self) -> None:
        """Flush and close the mirrors (the end of a run)."""
        for mirror in self.mirrors:
            mirror.close()
        self.mirrors = []

    def _guarded(self, write) -> None:
        try:
            write()
        except OSError as err:
            reason = failure_reason(err)
            if reason is None:
                raise
            raise CheckpointSaveError(f"cannot write {self.path}: {reason}; the checkpoints are "
                                      f"intact; free space or raise the limit, then continue with "
                                      f"--resume auto.") from None
