"""Helpers of the CLI tests: a small corpus, tiny-model flags, and running `python -m ltm.X`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

WORDS = ("the cat sat on a mat and dog ran to big red house with small blue car in park while "
         "bird sang over green tree near old river").split()


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_corpus(path: Path, paragraphs: int = 300, seed: int = 0) -> Path:
    """A small English-like text file, one document per paragraph."""
    rng = random.Random(seed)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))) + "."
             for _ in range(paragraphs)]
    path.write_text("\n\n".join(paras) + "\n")
    return path


def tiny_flags(corpus: Path, cache: Path, out_dir: Path, **overrides) -> list[str]:
    """Flags of a model small enough for a unit test (about 40k parameters, 32-token blocks)."""
    values = dict(dataset=corpus, cache_dir=cache, out_dir=out_dir, vocab_size=300, block_size=32,
                  d_model=32, n_layer=2, n_head=2, inner_steps=2, batch_size=8,
                  max_steps=6, warmup_steps=2, lr=3e-3, eval_every=3, eval_batches=1, save_every=2,
                  keep_last=0, lr_decay_steps=6, progress=False)
    values.update({"ltm.n_latent": 2, "ltm.d_latent": 8}, **overrides)
    flags = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def run_module(module: str, *args: str, prelude: str = "", timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `python -m module args` (or `prelude` then module.main(args)) offline; capture output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if prelude:
        code = f"{prelude}\nimport sys, {module}\nsys.exit({module}.main(sys.argv[1:]))"
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]


def shared_paths(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus file, data cache) shared by every test of a session."""
    base = tmp_path_factory.getbasetemp() / "ltm-shared"
    base.mkdir(exist_ok=True)
    corpus = base / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus)
    return corpus, base / "cache"


def shared_run(tmp_path_factory) -> Path:
    """A tiny run trained once per session (6 steps, checkpoints at 2, 4, 6); treat as read-only."""
    from ltm.train import main

    corpus, cache = shared_paths(tmp_path_factory)
    run_dir = tmp_path_factory.getbasetemp() / "ltm-shared" / "run"
    if not (run_dir / "latest").exists():
        assert main(tiny_flags(corpus, cache, run_dir)) == 0
    return run_dir


def run_everything(flags: list[str], tmp_path, tmp_path_factory, capsys) -> dict:
    """Train 4 steps straight and 2 + 2 with a resume (they must agree); sample twice (the same
    text); evaluate at K = 0, 2. Returns the evaluation report, with "run": the resumed run.

    Flags naming a `module:Class` path add --trust-code to the resume, sample and evaluate calls
    (a checkpoint naming code is refused without it)."""
    import json
    import math

    from safetensors.torch import load_file

    from ltm.evaluate import main as evaluate_main
    from ltm.sample import main as sample_main
    from ltm.train import main as train_main

    corpus, cache = shared_paths(tmp_path_factory)
    trust = ["--trust-code"] if any(":" in f for f in flags) else []
    common = dict(max_steps=4, save_every=2, eval_every=2, lr_decay_steps=4)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main([*tiny_flags(corpus, cache, straight, **common), *flags]) == 0
    assert train_main([*tiny_flags(corpus, cache, split, **{**common, "max_steps": 2}), *flags]) == 0
    assert train_main(["--out-dir", str(split), "--resume", "auto", "--max-steps", "4", "--no-progress",
                       *trust]) == 0
    a, b = train_losses(straight), train_losses(split)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6  # resumed == straight
    wa, wb = (load_file(run / "step_000004/model.safetensors") for run in (straight, split))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    capsys.readouterr()
    args = ["--checkpoint", str(split), "--prompt", "the cat sat", "--max-new-tokens", "5", "--seed", "3",
            *trust]
    assert sample_main(args) == 0
    first = capsys.readouterr().out
    assert "the cat sat" in first
    assert sample_main(args) == 0 and capsys.readouterr().out == first
    out = tmp_path / "eval.json"
    assert evaluate_main(["--checkpoint", str(split), "--inner-steps", "0,2", "--batches", "1",
                          "--iwae-samples", "2", "--out", str(out), *trust]) == 0
    report = json.loads(out.read_text())
    if report["exact"]:  # one heading: the exact NLL, no budget K
        assert report["results"] == [] and math.isfinite(report["exact_nll"]["nll"])
        return report | {"run": split}
    assert [r["inner_steps"] for r in report["results"]] == [0, 2]
    for r in report["results"]:  # a guide without a density (delta) gets prefix-predictive only
        assert "prefix_predictive" in r
        assert all(math.isfinite(v) for k in ("fresh_noise_elbo", "importance_weighted", "prefix_predictive")
                   if k in r for v in r[k].values() if isinstance(v, float))
    return report | {"run": split}
