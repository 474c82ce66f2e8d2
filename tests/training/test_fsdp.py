"""Sharded training under torchrun (`--fsdp`, FSDP2 on gloo): two sharded processes train what one
process does, and a checkpoint written under FSDP resumes under DDP or one process, and back.

Each test launches torchrun (or one process) on tiny models; the runs are shared within the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ltm.core.errors import ConfigError
from ltm.training.checkpoint import step_dirs
from ltm.training.config import TrainConfig
from tests.cli_helpers import REPO, shared_paths, tiny_flags, train_losses
from tests.training.test_distributed import ENV, STEPS, max_diff, torchrun, train, weights

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of 10 steps at global batch 8 (saves at 5 and 10), made on first use: (model, kind)
    with kind "one" (one process), "fsdp" (two sharded processes) or "ddp" (two processes)."""
    corpus, cache = shared_paths(tmp_path_factory)
    base = tmp_path_factory.mktemp("fsdp")
    made = {}

    def get(model: str, kind: str) -> Path:
        if (model, kind) not in made:
            run = base / f"{model}-{kind}"
            flags = tiny_flags(corpus, cache, run, model=model, **STEPS)
            done = train(flags) if kind == "one" else torchrun(2, flags + ["--fsdp"] * (kind == "fsdp"))
            assert done.returncode == 0, done.stderr[-3000:]
            made[model, kind] = run
        return made[model, kind]
    return get


def val_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "val"]


@pytest.mark.parametrize("model", ["ltm", "vanilla"])
def test_two_sharded_processes_train_what_one_does(runs, model):
    one, two = runs(model, "one"), runs(model, "fsdp")
    assert max_diff(weights(one), weights(two)) <= 1e-5  # measured: 5.7e-6 ltm, 6e-8 vanilla
    a, b = train_losses(one), train_losses(two)
    assert [s for s, _ in b] == list(range(1, 11))  # rank 0 alone writes metrics, once per step
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-5
    assert sorted(p.name for p in two.iterdir()) == ["latest", "metrics.jsonl", "run.lock",
                                                     "step_000005", "step_000010"]
    (v1,), (v2,) = val_records(one), val_records(two)
    assert v2["neg_elbo"] == pytest.approx(v1["neg_elbo"], abs=1e-5)
    assert json.loads((two / "step_000010" / "config.json").read_text())["fsdp"] is True


def test_gradients_accumulated_over_micro_batches_and_the_inner_loop_reduce_once(tmp_path,
                                                                                 tmp_path_factory):
    """--grad-accum 2 with --accumulate-decoder-grads (decoder gradients from every inner step)
    and activation checkpointing: every backward pass accumulates unsynced, the step's last
    reduce-scatters; the weights equal one process's (measured 2.3e-6)."""
    corpus, cache = shared_paths(tmp_path_factory)
    extra = ["--grad-accum", "2", "--accumulate-decoder-grads", "--activation-checkpointing"]
    one, two = tmp_path / "one", tmp_path / "two"
    done = [train(tiny_flags(corpus, cache, one, **STEPS) + extra),
            torchrun(2, tiny_flags(corpus, cache, two, **STEPS) + extra + ["--fsdp"])]
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    assert max_diff(weights(one), weights(two)) <= 1e-5


def resume_from(source: Path, step: int, dest: Path, launch, fsdp: bool) -> Path:
    """Copy `source`'s checkpoint of `step` to `dest` and continue it to step 10."""
    dest.mkdir()
    shutil.copytree(source / f"step_{step:06d}", dest / f"step_{step:06d}")
    shutil.copy(source / "metrics.jsonl", dest / "metrics.jsonl")
    flags = ["--out-dir", str(dest), "--resume", "auto", "--max-steps", "10", "--no-progress"]
    done = launch(flags + ["--fsdp"] * fsdp)
    assert done.returncode == 0, done.stderr[-3000:]
    return dest


def test_a_sharded_checkpoint_resumes_sharded_exactly(runs, tmp_path):
    straight = runs("ltm", "fsdp")
    resumed = resume_from(straight, 5, tmp_path / "again", lambda f: torchrun(2, f), fsdp=True)
    assert max_diff(weights(straight), weights(resumed)) <= 1e-7
    assert train_losses(resumed) == train_losses(straight)
    assert [s for s, _ in step_dirs(resumed)] == [5, 10]


@pytest.mark.parametrize("kind", ["ddp", "one"])
def test_a_sharded_checkpoint_resumes_unsharded(runs, tmp_path, kind):
    """FSDP to step 5, then DDP or one process to 10: the run a straight FSDP run is, within the
    float summation order of the other mode (5 steps)."""
    straight = runs("vanilla", "fsdp")
    launch = (lambda f: torchrun(2, f)) if kind == "ddp" else train
    resumed = resume_from(straight, 5, tmp_path / kind, launch, fsdp=False)
    assert max_diff(weights(straight), weights(resumed)) <= 1e-6
    cfg = json.loads((resumed / "step_000010" / "config.json").read_text())
    assert cfg["fsdp"] is False  # --fsdp is not taken from the checkpoint


def test_a_one_process_checkpoint_resumes_sharded(runs, tmp_path):
    straight = runs("ltm", "one")
    resumed = resume_from(straight, 5, tmp_path / "sharded", lambda f: torchrun(2, f), fsdp=True)
    assert max_diff(weights(straight), weights(resumed)) <= 1e-6  # measured 3.6e-7


def test_a_process_with_no_rows_of_a_validation_batch_still_takes_part(tmp_path, tmp_path_factory):
    """35 validation blocks in batches of 34: the last batch's one row goes to rank 1, and rank 0
    runs a stand-in (every forward of a sharded model all-gathers) that counts for nothing."""
    corpus, cache = shared_paths(tmp_path_factory)
    steps = dict(batch_size=34, eval_batches=2, max_steps=1, eval_every=1, save_every=1, precision="fp32")
    one, two = tmp_path / "one", tmp_path / "two"
    done = [train(tiny_flags(corpus, cache, one, **steps)),
            torchrun(2, tiny_flags(corpus, cache, two, **steps) + ["--fsdp"])]
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    (a,), (b,) = val_records(one), val_records(two)
    assert a["sequences"] == b["sequences"] == 35
    for key in ("reconstruction", "kl", "neg_elbo", "mutual_info"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key
    assert b["active_units"] == a["active_units"]


@pytest.mark.parametrize(("env", "flags", "says"), [
    ({}, ["--fsdp"], "--fsdp shards the model over the processes of a torchrun launch"),
    ({"WORLD_SIZE": "2", "RANK": "0"},
     ["--fsdp", "--model", "adaptive_cot", "--adaptive-cot.prune-threshold", "0.1"],
     "--fsdp cannot shard the adaptive_cot family here: --adaptive-cot.prune-threshold 0.1"),
])
def test_bad_fsdp_settings_are_one_sentence_and_write_nothing(env, flags, says, tmp_path,
                                                              tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ltm.train", *tiny_flags(corpus, cache, run, max_steps=2), *flags]
    done = subprocess.run(cmd, cwd=REPO, env={**ENV, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], done.stderr
    assert not run.exists()


@pytest.mark.parametrize("model", ["ltm", "vanilla", "ponderlm2", "ponderlm", "adaptive_cot", "pause",
                                   "looped", "ponderlm2_stochastic"])
def test_every_family_but_pruned_adaptive_cot_can_be_sharded(model):
    cfg = TrainConfig(model=model, fsdp=True)
    assert cfg.family.fsdp_refusal(cfg.options) is None
    if model == "adaptive_cot":
        with pytest.raises(ConfigError, match="prune-threshold 0.5 skips"):
            TrainConfig(model=model, fsdp=True, sections={"adaptive_cot": {"prune_threshold": 0.5}})


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ponderlm2", "ponderlm", "adaptive_cot", "pause", "looped",
                                   "ponderlm2_stochastic"])
def test_every_family_trains_sharded_as_under_one_process(model, tmp_path, tmp_path_factory):
    """Measured max differences after 4 steps: 1e-7 to 4e-7."""
    corpus, cache = shared_paths(tmp_path_factory)
    steps = dict(max_steps=4, save_every=4, eval_every=4, lr_decay_steps=4, lr=1e-3, precision="fp32")
    one, two = tmp_path / "one", tmp_path / "two"
    done = [train(tiny_flags(corpus, cache, one, model=model, **steps)),
            torchrun(2, tiny_flags(corpus, cache, two, model=model, **steps) + ["--fsdp"])]
    assert all(d.returncode == 0 for d in done), [d.stderr[-1500:] for d in done]
    assert max_diff(weights(one, 4), weights(two, 4)) <= 1e-5
