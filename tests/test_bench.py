"""Every benchmark script runs in its `--quick` smoke mode and ends with its headline ratio."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO

SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if not p.name.startswith("_"))  # _x.py: shared


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


def test_throughput_quick_reports_each_family_in_fp32_and_bf16():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "bench" / "throughput.py"), "--quick", "--families", "ltm",
           "adaptive_cot"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    rows = {tuple(line.split()[:2]): line.split() for line in lines}
    for name in ("vanilla", "ltm", "adaptive_cot"):
        for precision in ("fp32", "bf16"):
            assert (name, precision) in rows, proc.stdout
    vanilla = rows[("vanilla", "fp32")]  # ms/step tok/s x-vanilla GFLOP/step stated GFLOP/s %peak bf16x MiB
    assert float(vanilla[2]) > 0 and float(vanilla[7]) > 0 and float(vanilla[10]) >= 0, vanilla
    assert any(line.startswith("has_fast_bf16(cpu): ") for line in lines), proc.stdout
    assert re.search(r"GEMM peak fp32: \d+\.\d+ GFLOP/s", proc.stdout), proc.stdout
    assert re.search(r"GEMM peak bf16: \d+\.\d+ GFLOP/s", proc.stdout), proc.stdout
    assert re.search(r"of the measured fp32 GEMM peak \(target >= 50%\): (PASS|FAIL)", proc.stdout)
    assert re.search(r"adaptive_cot train cost \(fp32\): measured \d+\.\d+x vanilla, stated \d+\.\d+x",
                     proc.stdout), proc.stdout
    assert lines[-1].startswith("vanilla bf16/fp32 speed-up ratio: "), lines[-1]
    assert re.search(r"target >= 1\.5x: (PASS|FAIL)", lines[-1]), lines[-1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_part_on_the_cpu(tmp_path):
    """`bench/gpu.sh --dry-run`: the GPU check's parts at tiny shapes on the CPU (3 minutes)."""
    env = {**os.environ, "OUT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"gpu check: \d+ parts passed, 0 failed", proc.stdout.strip().splitlines()[-1])
