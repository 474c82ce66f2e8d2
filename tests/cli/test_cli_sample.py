"""`python -m ltm.sample` and `sample_text`: reproducible with a seed, prompts continued, prior draws."""

from __future__ import annotations

import shutil

import pytest

from ltm.data.tokenizer import encode
from ltm.sample import main
from ltm.sampling import generate_text, sample_text
from ltm.training.checkpoint import load_checkpoint
from tests.cli_helpers import one_thread, run_module, shared_run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _samples(stdout: str) -> list[str]:
    return [block.split("\n", 1)[1].strip("\n") for block in stdout.split("=== sample ")[1:]]


def test_cli_is_reproducible_and_continues_the_prompt(capsys, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    capsys.readouterr()  # drop the shared run's training log
    args = ["--checkpoint", str(run), "--prompt", "the cat sat", "--prompt", "a big red",
            "--num-samples", "2", "--max-new-tokens", "8", "--seed", "7"]
    proc = run_module("ltm.sample", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(args) == 0
    in_process = capsys.readouterr().out
    assert proc.stdout == in_process  # same seed, other process: same text
    samples = _samples(in_process)
    assert len(samples) == 4
    assert all(s.startswith("the cat sat") for s in samples[:2]) and samples[2].startswith("a big red")
    assert main([*args[:-1], "8"]) == 0
    assert capsys.readouterr().out != in_process  # another seed, other text


def test_api_conditional_and_unconditional(tmp_path_factory):
    run = shared_run(tmp_path_factory)
    model, tokenizer, config = load_checkpoint(run)
    a = generate_text(model, tokenizer, config, ["the dog"], num_samples=3, max_new_tokens=6, seed=1)
    assert a == sample_text(run, "the dog", num_samples=3, max_new_tokens=6, seed=1)
    assert len(a) == 3
    prior = generate_text(model, tokenizer, config, None, unconditional=True, num_samples=2,
                          max_new_tokens=6, seed=1, temperature=0)
    assert len(prior) == 2 and all(isinstance(t, str) for t in prior)
    with pytest.raises(ValueError, match="give a prompt"):
        generate_text(model, tokenizer, config, None)
    long_prompt = "the cat " * config.data.block_size
    assert len(encode(tokenizer, long_prompt)) > config.data.block_size
    with pytest.raises(ValueError, match="shorten the prompt"):
        generate_text(model, tokenizer, config, [long_prompt])


def test_corrupt_checkpoint_is_one_sentence(capsys, tmp_path, tmp_path_factory):
    run = tmp_path / "run"
    shutil.copytree(shared_run(tmp_path_factory), run)
    state = run / "step_000006" / "tokenizer.json"
    state.write_text(state.read_text()[:50])
    assert main(["--checkpoint", str(run), "--prompt", "the"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint file {state} is truncated") and err.count("\n") == 1
    assert state.exists()
    assert main(["--checkpoint", str(tmp_path / "nothing"), "--unconditional"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_prompt_file(capsys, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the red car\n")
    capsys.readouterr()
    assert main(["--checkpoint", str(run), "--prompt-file", str(prompt), "--max-new-tokens", "4"]) == 0
    assert _samples(capsys.readouterr().out)[0].startswith("the red car")
    assert main(["--checkpoint", str(run), "--prompt-file", str(tmp_path / "missing.txt")]) == 2
    assert "prompt file" in capsys.readouterr().err
