"""Every comparison shipped in configs/compare/ loads and checks (each run's TrainConfig built), with
its name and output folder the file's own, so two comparisons never write into one folder."""

from pathlib import Path

import pytest

from ltm.eval.comparison import load_comparison

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "compare").glob("*.yaml"))


def test_there_are_shipped_comparisons():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_a_shipped_comparison_loads_into_its_own_folder(path):
    comp = load_comparison(path)
    assert comp.name == path.stem
    assert Path(comp.out_dir) == Path("runs/compare") / path.stem
    names = [run.name for run in comp.runs]
    assert names and len(set(names)) == len(names)
    for run in comp.runs:
        assert run.config.max_steps >= 1
