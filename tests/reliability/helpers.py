"""Helpers of the reliability tests: a tampered checkpoint, a paused training, a file snapshot."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli_helpers import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def tamper(run: Path, dest: Path, **config) -> Path:
    """A copy of `run`'s latest checkpoint at `dest/step_NNNNNN/` whose config.json has `config`
    set, with the manifest re-hashed (as anyone can do to a plain sha256): what a malicious
    checkpoint shared online looks like. Returns the run folder `dest`."""
    step = run / (run / "latest").read_text().strip()
    target = dest / step.name
    shutil.copytree(step, target)
    (dest / "latest").write_text(step.name + "\n")
    values = json.loads((target / "config.json").read_text())
    values.update(config)
    (target / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    manifest = json.loads((target / "manifest.json").read_text())
    data = (target / "config.json").read_bytes()
    manifest["files"]["config.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), except those named in `skip`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def _interruptible() -> None:
    """In the child: SIGINT at its default, so Python raises KeyboardInterrupt on it, even where the
    test session itself runs with SIGINT ignored (a job started with `&` in a script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(flags: list[str], **popen) -> subprocess.Popen:
    """`python -m ltm.train FLAGS` in the background, its output captured."""
    return subprocess.Popen([sys.executable, "-m", "ltm.train", *flags], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible, **popen)


def train_steps(run: Path) -> list[int]:
    """The training steps written to `run`/metrics.jsonl so far (complete lines only)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("split") == "train":
            steps.append(record["step"])
    return steps


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll `condition()` until it holds; fail with the process's output if it exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before {what}:\n"
                                 f"{proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
