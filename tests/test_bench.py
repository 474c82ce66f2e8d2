"""Every benchmark script runs in its `--quick` smoke mode and ends with its headline ratio."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO

SCRIPTS = sorted((REPO / "bench").glob("*.py"))


def test_there_are_benchmarks():
    assert SCRIPTS, "bench/ holds no scripts"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_quick_run_prints_a_finite_ratio_last(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    numbers = [float(x) for x in re.findall(r"\d+\.\d+", last)]
    assert "ratio" in last or "measured/stated" in last, last
    assert numbers and all(math.isfinite(x) and x > 0 for x in numbers), last
