"""`ltm.compare` on a reasoning task: runs may render the common examples their own way (direct,
with steps, with Coconut's curriculum), each run is scored by accuracy, and results.md says so."""

from __future__ import annotations

import json

import pytest
import yaml

from ltm.compare import main
from ltm.core.errors import ConfigError
from ltm.eval.comparison import load_comparison
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)

TASK = "reasoning:parity?bits=8&examples=200"
COMMON = dict(dataset=TASK + "&steps=0", vocab_size=262, block_size=66, d_model=32, n_layer=1, n_head=2,
              batch_size=8, max_steps=4, warmup_steps=1, eval_every=4, eval_batches=1, save_every=4,
              keep_last=0, progress=False)
RUNS = [{"name": "direct", "model": "vanilla", "block_size": 34},  # its rendering: 32 + BOS/EOS
        {"name": "steps", "model": "vanilla", "dataset": TASK + "&steps=1"},
        {"name": "coconut", "model": "coconut", "dataset": TASK + "&stages=3&stage_steps=1"}]
EVAL = dict(inner_steps=[0], batches=1, iwae_samples=2, protocol_steps=0,
            task={"difficulties": [8], "examples": 5})


def write(path, runs=RUNS, **common):
    data = {"name": "tiny_reasoning", "out_dir": str(path / "out"), "eval": EVAL,
            "common": {**COMMON, "cache_dir": str(path / "cache"), **common}, "runs": runs}
    (path / "c.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return path / "c.yaml"


@pytest.mark.usefixtures("one_thread")
def test_each_run_is_scored_by_accuracy(tmp_path, capsys):
    assert main(["--config", str(write(tmp_path))]) == 0
    capsys.readouterr()
    results = (tmp_path / "out" / "results.md").read_text()
    assert "Reasoning: greedy exact-match accuracy on 5 test questions" in results
    assert "blocks of 34 to 66 tokens (each run sizes its own" in results
    for name in ("direct", "steps", "coconut"):
        (row,) = json.loads((tmp_path / "out" / name / "eval.json").read_text())["reasoning"]
        assert row["spec"] == "reasoning:parity?bits=8" and row["examples"] == 5
        assert f"| {name} |" in results
    steps = json.loads((tmp_path / "out" / "steps" / "eval.json").read_text())["reasoning"][0]
    direct = json.loads((tmp_path / "out" / "direct" / "eval.json").read_text())["reasoning"][0]
    assert steps["with_steps"] and not direct["with_steps"]
    task = json.loads((tmp_path / "out" / "summary.json").read_text())["task"]
    assert task["steps"]["8"]["accuracy"] == steps["accuracy"] and task["steps"]["8"]["seeds"] == 1
    assert task["direct"]["8"]["flops_per_answer"] == direct["flops_per_answer"]
    assert (tmp_path / "out" / "accuracy_vs_compute.png").stat().st_size > 0
    # Coconut's step is measured at each stage (max_steps 4 with stage_steps 1 trains one step at
    # each of stages 0-3); its thought passes run only the positions not yet final, so every stage
    # costs about one pass (the counter counts a causal square in full, a segment's rectangle as is)
    cost = json.loads((tmp_path / "out" / "coconut" / "cost.json").read_text())
    stages = cost["stage_flops_per_step"]
    assert len(stages) == 4 and len(set(stages)) > 1 and all(0.8 < s / stages[0] < 1.25 for s in stages)
    assert cost["training_flops"] == sum(stages) and cost["flops_per_step"] == stages[-1]
    plain = json.loads((tmp_path / "out" / "steps" / "cost.json").read_text())
    assert stages[0] == plain["flops_per_step"]  # stage 0 is vanilla with written steps
    assert "![accuracy_vs_compute.png](accuracy_vs_compute.png)" in results


@pytest.mark.usefixtures("one_thread")
def test_seeds_give_a_mean_accuracy_per_run(tmp_path, capsys):
    from statistics import fmean, stdev

    runs = RUNS[:1]
    data = yaml.safe_load(write(tmp_path, runs=runs).read_text())
    data["seeds"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["--config", str(tmp_path / "c.yaml")]) == 0
    capsys.readouterr()
    accs = [json.loads((tmp_path / "out" / "direct" / f"seed_{s}" / "eval.json").read_text())["reasoning"][0]
            ["accuracy"] for s in (0, 1)]
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["task"]["direct"]["8"]
    assert entry["seeds"] == 2 and entry["accuracy"] == pytest.approx(fmean(accs))
    assert entry["accuracy_sd"] == pytest.approx(stdev(accs))
    assert "Reasoning accuracy, mean ± sd over seeds:" in (tmp_path / "out" / "results.md").read_text()


def test_a_run_on_other_examples_is_refused(tmp_path):
    harder = {"name": "harder", "model": "vanilla", "dataset": "reasoning:parity?bits=9&examples=200"}
    runs = [*RUNS[:1], harder]
    with pytest.raises(ConfigError, match="must share the data section"):
        load_comparison(write(tmp_path, runs=runs))


def test_a_reasoning_run_may_size_its_block_but_a_prose_run_may_not(tmp_path, capsys):
    comp = load_comparison(write(tmp_path))
    assert [r.config.data.block_size for r in comp.runs] == [34, 66, 66]
    with pytest.raises(ConfigError, match="must share the data section"):
        load_comparison(write(tmp_path, dataset="embedded", vocab_size=300))
    too_short = [RUNS[0], {**RUNS[1], "block_size": 40}, RUNS[2]]  # written steps need 66
    assert main(["--config", str(write(tmp_path, runs=too_short))]) == 2
    assert "more than one block of 40; raise --block-size" in capsys.readouterr().err
    assert not (tmp_path / "out" / "direct" / "metrics.jsonl").exists()  # refused before training


def test_quick_keeps_the_task_blocks(tmp_path):
    comp = load_comparison(write(tmp_path), quick=True)
    assert [r.config.data.block_size for r in comp.runs] == [34, 66, 66]
    assert comp.runs[0].config.data.vocab_size == 262
    assert comp.eval.task == {"difficulties": [8], "examples": 8}
