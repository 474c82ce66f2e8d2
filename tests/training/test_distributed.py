"""Data-parallel training under torchrun (gloo on CPU): two processes train what one does.

Each test launches `python -m torch.distributed.run` (torchrun) or two ranks by hand, on tiny
models, so the whole file takes about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltm.training.checkpoint import load_checkpoint, step_dirs
from tests.cli_helpers import REPO, shared_paths, tiny_flags, train_losses

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
# fp32: one and two processes sum in other orders, and bf16 rounding would turn that 1e-7
# difference into 1e-3 after 10 steps (measured on AVX512-BF16 and AMX CPUs).
STEPS = dict(max_steps=10, save_every=5, eval_every=10, lr_decay_steps=10, lr=1e-3, precision="fp32")


def torchrun(nproc: int, flags: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "ltm.train", *flags]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def train(flags: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ltm.train", *flags], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def weights(run: Path, step: int = 10) -> dict[str, torch.Tensor]:
    return load_file(run / f"step_{step:06d}" / "model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One- and two-process runs of ltm and vanilla, 10 steps at global batch 8 (saves at 5, 10)."""
    corpus, cache = shared_paths(tmp_path_factory)
    base = tmp_path_factory.mktemp("ddp")
    out = {}
    for model in ("ltm", "vanilla"):
        for nproc in (1, 2):
            run = base / f"{model}-{nproc}"
            flags = tiny_flags(corpus, cache, run, model=model, **STEPS)
            done = train(flags) if nproc == 1 else torchrun(nproc, flags)
            assert done.returncode == 0, done.stderr[-2000:]
            out[model, nproc] = run
    return out


@pytest.mark.parametrize("model", ["ltm", "vanilla"])
def test_two_processes_train_what_one_does(runs, model):
    one, two = runs[model, 1], runs[model, 2]
    assert max_diff(weights(one), weights(two)) <= 1e-5
    a, b = train_losses(one), train_losses(two)
    assert [s for s, _ in b] == list(range(1, 11))  # rank 0 alone writes metrics, once per step
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-5
    assert [s for s, _ in step_dirs(two)] == [5, 10]  # each checkpoint written once, nothing else
    assert sorted(p.name for p in two.iterdir()) == ["latest", "metrics.jsonl", "run.lock",
                                                     "step_000005", "step_000010"]


def val_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "val"]


def test_validation_split_over_processes_equals_one(runs):
    one, two = val_records(runs["ltm", 1]), val_records(runs["ltm", 2])
    assert len(one) == len(two) == 1
    for key in ("reconstruction", "kl", "neg_elbo", "mutual_info"):
        assert two[0][key] == pytest.approx(one[0][key], abs=1e-5), key
    assert two[0]["active_units"] == one[0]["active_units"]
    assert two[0]["kl_per_latent"] == pytest.approx(one[0]["kl_per_latent"], abs=1e-5)


def flat_numbers(report, path=""):
    """(path, value) of every number in a JSON report."""
    if isinstance(report, dict):
        for k, v in report.items():
            yield from flat_numbers(v, f"{path}.{k}")
    elif isinstance(report, list):
        for i, v in enumerate(report):
            yield from flat_numbers(v, f"{path}[{i}]")
    elif isinstance(report, (int, float)) and not isinstance(report, bool):
        yield path, report


@pytest.mark.parametrize("model", ["ltm", "vanilla"])
def test_evaluate_split_over_processes_equals_one(runs, model, tmp_path):
    args = ["--checkpoint", str(runs[model, 1]), "--inner-steps", "0,2", "--batches", "2",
            "--batch-size", "5", "--iwae-samples", "3"]  # 5 rows: shares of 2 and 3
    one = subprocess.run([sys.executable, "-m", "ltm.evaluate", *args, "--out", str(tmp_path / "1.json")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "ltm.evaluate", *args, "--out", str(tmp_path / "2.json")]
    two = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (dict(flat_numbers(json.loads((tmp_path / f"{n}.json").read_text()))) for n in (1, 2))
    assert a.keys() == b.keys() and len(a) >= 8
    for key, value in a.items():
        tol = 1e-6 * max(1.0, abs(value)) if "perplexity" in key else 1e-5
        assert b[key] == pytest.approx(value, abs=tol), key
    assert two.stdout.count("nats/token") == one.stdout.count("nats/token")  # rank 0 alone prints


def test_resume_under_two_processes_equals_straight(runs, tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "resumed"
    first = torchrun(2, tiny_flags(corpus, cache, run, **{**STEPS, "max_steps": 5}))
    assert first.returncode == 0, first.stderr[-2000:]
    again = torchrun(2, ["--out-dir", str(run), "--resume", "auto", "--max-steps", "10", "--no-progress"])
    assert again.returncode == 0, again.stderr[-2000:]
    straight = runs["ltm", 2]
    assert max_diff(weights(straight), weights(run)) <= 1e-7
    assert train_losses(run) == train_losses(straight)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_stops_the_others_with_one_sentence(tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "killed"
    flags = tiny_flags(corpus, cache, run, max_steps=100_000, lr_decay_steps=100_000, save_every=5,
                       eval_every=0) + ["--dist-timeout", "60"]
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "ltm.train", *flags], cwd=REPO,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not (run / "step_000010").exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - killed_at
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close(), p.stderr.close()  # the killed rank's pipes too
    assert procs[0].returncode == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "lost contact with another process" in lines[0]
    assert "--resume auto" in lines[0]
    assert waited < 60, f"rank 0 took {waited:.0f} s to notice"
    model, _, cfg = load_checkpoint(run)  # the last checkpoint loads
    assert cfg.batch_size == 8 and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize(("env", "flags", "says"), [
    ({"WORLD_SIZE": "3", "RANK": "0"}, [], "does not split evenly over 3 processes"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, ["--grad-accum", "3"], "--grad-accum 3 equal micro-batches"),
    ({}, ["--dist-backend", "nccl"], "--dist-backend nccl needs CUDA"),
    ({}, ["--precision", "bf16"], "--precision bf16 needs native bf16"),
])
def test_bad_scale_settings_are_one_sentence_and_touch_nothing(env, flags, says, tmp_path,
                                                               tmp_path_factory):
    if "--precision" in flags:
        from ltm.training.precision import has_fast_bf16

        if has_fast_bf16(torch.device("cpu")):
            pytest.skip("this CPU has native bf16, so --precision bf16 is allowed")
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    first = train(tiny_flags(corpus, cache, run, max_steps=2, save_every=2))
    assert first.returncode == 0, first.stderr
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != "run.lock"}
    cmd = [sys.executable, "-m", "ltm.train", "--out-dir", str(run), "--resume", "auto",
           "--max-steps", "4", *flags]
    env = {k: v for k, v in {**ENV, **env}.items() if k != "LTM_ALLOW_EMULATED_BF16"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], done.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != "run.lock"} == before
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


FAMILIES = ["ponderlm2", "ponderlm", "adaptive_cot", "pause", "looped", "ponderlm2_stochastic"]


@pytest.mark.slow
@pytest.mark.parametrize("model", FAMILIES)
def test_every_family_trains_under_two_processes_as_under_one(model, tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    steps = dict(max_steps=4, save_every=4, eval_every=4, lr_decay_steps=4, lr=1e-3, precision="fp32")
    one, two = tmp_path / "one", tmp_path / "two"
    done = [train(tiny_flags(corpus, cache, one, model=model, **steps)),
            torchrun(2, tiny_flags(corpus, cache, two, model=model, **steps))]
    assert all(d.returncode == 0 for d in done), [d.stderr[-1500:] for d in done]
    assert max_diff(weights(one, 4), weights(two, 4)) <= 1e-5
