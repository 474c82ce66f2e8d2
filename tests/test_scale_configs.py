"""The configs of configs/scale/ build, and (slow) the GPT-2-small ones run a training step on the
CPU within the peak memory their headers state."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ltm.training.config import TrainConfig, load_config_file
from tests.cli_helpers import REPO

CONFIGS = sorted((REPO / "configs" / "scale").glob("*.yaml"))


def test_there_are_the_papers_sizes():
    assert {p.stem for p in CONFIGS} >= {"gpt2_small_vanilla", "gpt2_small_ltm", "gpt2_small_ponderlm2",
                                         "ltm_paper_s", "ltm_paper_m", "ltm_paper_l"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_reads_and_states_its_cost(path):
    cfg = TrainConfig.from_dict(load_config_file(path), str(path))
    assert cfg.data.block_size == 1024
    header = path.read_text()
    for figure in ("M parameters", "GFLOP per token", "tokens/s", "peak memory"):
        assert figure in header, f"{path.name} does not state its {figure}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2_small_vanilla", "gpt2_small_ponderlm2", "gpt2_small_ltm"])
def test_gpt2_small_runs_a_step_within_the_memory_it_states(name):
    """One warm-up and one timed step at the header's batch (the LTM with K = 2 inner steps: the
    peak does not grow with K, only the time)."""
    sys.path.insert(0, str(REPO / "bench"))
    from scale_configs import stated_peak_gib

    path = REPO / "configs" / "scale" / f"{name}.yaml"
    stated = stated_peak_gib(path)
    cmd = [sys.executable, str(REPO / "bench" / "scale_configs.py"), "--child", str(path), "--batch", "1",
           "--no-flops", "--inner-steps", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["peak_gib"]
    assert measured <= stated * 1.05, f"{name}: {measured:.2f} GiB > stated {stated:.2f} GiB"
