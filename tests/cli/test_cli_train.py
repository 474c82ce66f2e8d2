"""`python -m ltm.train`: shipped configs train, user errors are one sentence, a killed save loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltm.train import main
from ltm.training.checkpoint import load_checkpoint
from tests.cli_helpers import (  # noqa: F401 (fixture)
    REPO,
    one_thread,
    run_module,
    shared_paths,
    shared_run,
    tiny_flags,
    train_losses,
)

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _data_path(config: Path) -> Path | None:
    import yaml

    dataset = yaml.safe_load(config.read_text()).get("dataset", "embedded")
    return None if dataset == "embedded" else REPO / dataset


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_two_steps(config, tmp_path, tmp_path_factory):
    data = _data_path(config)
    if data is not None and not data.exists():
        pytest.skip(f"{config.name} needs {data}, which is not on this machine")
    _, cache = shared_paths(tmp_path_factory)
    # cut the data and the BPE for speed (both embedded configs then share one cached build)
    small = ["--max-documents", "40" if data is None else "300", "--vocab-size", "300",
             "--inner-steps", "1"]
    proc = run_module("ltm.train", "--config", str(config), "--max-steps", "2", "--out-dir", str(tmp_path),
                      "--cache-dir", str(cache), "--batch-size", "4", "--eval-batches", "1", "--no-progress",
                      *small)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "step_000002" / "model.safetensors").is_file()
    assert [s for s, _ in train_losses(tmp_path)] == [1, 2]


def _user_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err  # one line, the last
    return errors[0]


@pytest.mark.parametrize("overrides, message", [
    ({"prior": "nope"}, "unknown prior 'nope'; choose one of"),
    ({"guide": "nope"}, "unknown guide 'nope'; choose one of"),
    ({"prior": "no.such.module:Prior"}, "cannot import prior 'no.such.module:Prior'"),
    ({"prior": "mixture", "prior_kwargs": '{"components": 2}'}, "cannot build prior 'mixture' with prior"),
    ({"dataset": "/no/such/corpus.txt"}, "data path '/no/such/corpus.txt' does not exist"),
    ({"ltm.n_latent": 3}, "must split evenly over n_layer"),
    ({"model": "vanilla", "prior": "mixture"}, "model 'vanilla' has its own prior"),
    ({"model": "no_such_family"}, "unknown model family 'no_such_family'; choose one of"),
])
def test_bad_input_is_one_sentence(capsys, tmp_path, tmp_path_factory, overrides, message):
    corpus, cache = shared_paths(tmp_path_factory)
    err = _user_error(capsys, tiny_flags(corpus, cache, tmp_path / "run", **overrides))
    assert message in err


def test_bad_config_file_and_empty_data(capsys, tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner_step: 3\n")
    err = _user_error(capsys, ["--config", str(bad)])
    assert f"unknown key 'inner_step' in {bad}; did you mean 'inner_steps'?" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in _user_error(capsys, tiny_flags(empty, cache, tmp_path / "run"))


def test_existing_run_and_bad_checkpoints_lose_nothing(capsys, tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    source = shared_run(tmp_path_factory)
    err = _user_error(capsys, tiny_flags(corpus, cache, source))
    assert "already holds a run" in err and "--resume auto" in err
    # an incompatible checkpoint: other sizes
    err = _user_error(capsys, tiny_flags(corpus, cache, tmp_path / "b", init_from=source, d_model=64))
    assert "has shape" in err and "model.safetensors" in err
    # a truncated checkpoint: named, nothing deleted, the earlier one suggested
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(source, run)
    model_file = run / "step_000006" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    err = _user_error(capsys, tiny_flags(corpus, cache, run, resume="auto", max_steps=8))
    assert f"checkpoint file {model_file} is truncated" in err and "step_000004" in err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


KILL_AT_SECOND_SAVE = """
import os, safetensors.torch as st
_save, _calls = st.save_file, []
def save_file(tensors, filename, metadata=None):
    _calls.append(filename)
    if len(_calls) == 2:  # the checkpoint at step 4: die halfway through the write
        open(filename, "wb").write(b"half a safetensors file")
        os._exit(9)
    return _save(tensors, filename, metadata=metadata)
st.save_file = save_file
"""


def test_killed_during_checkpoint_write_then_resume(tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    proc = run_module("ltm.train", *tiny_flags(corpus, cache, run), prelude=KILL_AT_SECOND_SAVE)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert (run / "latest").read_text().strip() == "step_000002"
    assert not (run / "step_000004").exists() and list(run.glob(".tmp-step_000004-*"))
    load_checkpoint(run)  # the previous checkpoint is intact and loadable
    assert main(tiny_flags(corpus, cache, run, resume="auto")) == 0
    straight = shared_run(tmp_path_factory)  # the same flags, never interrupted
    a, b = train_losses(straight), train_losses(run)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6
    wa = load_file(straight / "step_000006/model.safetensors")
    wb = load_file(run / "step_000006/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list(run.glob(".tmp-*"))  # the next save cleared the half-written one


def test_resume_from_a_moved_run_needs_no_other_flag(tmp_path, tmp_path_factory, capsys):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(shared_run(tmp_path_factory), moved)
    assert main(["--resume", str(moved / "step_000004"), "--max-steps", "7", "--no-progress"]) == 0
    assert f"resumed from {moved / 'step_000004'} at step 4" in capsys.readouterr().out
    assert (moved / "latest").read_text().strip() == "step_000007"  # written where the run is now
    assert [s for s, _ in train_losses(moved)] == list(range(1, 8))
