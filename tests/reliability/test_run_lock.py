"""One run per directory: a second training or comparison aimed at a busy directory is refused in
one sentence and changes nothing; a lock left by `kill -9` never blocks (issue: two runs into one
--out-dir both exited 0 and erased each other's metrics)."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from ltm.compare import main as compare_main
from ltm.train import main as train_main
from ltm.training.run_lock import RunLock
from tests.cli_helpers import one_thread, shared_paths, tiny_flags  # noqa: F401 (fixture)
from tests.eval.test_compare import write_config
from tests.reliability.helpers import snapshot, start_training, train_steps, wait_for

pytestmark = pytest.mark.usefixtures("one_thread")
LONG = dict(max_steps=100_000, lr_decay_steps=100_000, save_every=2, eval_every=0)


def refused(err: str, pid: int) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"PID {pid} on host {socket.gethostname()}" in lines[0] and "in use by another" in lines[0]
    return lines[0]


@pytest.mark.parametrize("second", ["resume", "fresh"])
def test_a_second_training_is_refused_and_the_first_loses_nothing(second, tmp_path, tmp_path_factory,
                                                                   capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    first = start_training(tiny_flags(corpus, cache, run, **LONG))
    try:
        wait_for(lambda: (run / "latest").exists() and len(train_steps(run)) >= 3, first,
                 "the first checkpoint")
        first.send_signal(signal.SIGSTOP)  # frozen: it holds the lock and writes nothing
        before = snapshot(run)
        flags = (["--out-dir", str(run), "--resume", "auto", "--max-steps", "50", "--no-progress"]
                 if second == "resume" else tiny_flags(corpus, cache, run, max_steps=4))
        assert train_main(flags) == 2
        refused(capsys.readouterr().err, first.pid)
        assert snapshot(run) == before  # byte for byte
        first.send_signal(signal.SIGCONT)
        stopped_at = len(train_steps(run))
        wait_for(lambda: len(train_steps(run)) >= stopped_at + 3, first, "the first run to go on")
    finally:
        first.kill()
        first.communicate()
    steps = train_steps(run)
    assert steps == list(range(1, len(steps) + 1))  # one run's rows, in order, none lost


def test_a_lock_left_by_kill_9_does_not_block(tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    first = start_training(tiny_flags(corpus, cache, run, **LONG))
    try:
        wait_for(lambda: (run / "latest").exists(), first, "the first checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert (run / "run.lock").exists()
    latest = int((run / "latest").read_text().strip().split("_")[1])
    flags = ["--out-dir", str(run), "--resume", "auto", "--max-steps", str(latest + 2), "--no-progress"]
    assert train_main(flags) == 0


def test_a_second_comparison_into_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", tmp_path / "cache", out)
    with RunLock(out, "comparison"):
        assert compare_main(["--config", str(config)]) == 2
    refused(capsys.readouterr().err, os.getpid())
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # nothing trained, nothing written


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "new" / "run"
    assert train_main(tiny_flags(corpus, cache, run, max_steps=2) + ["--prior", "nope"]) == 2
    assert "unknown prior 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_comparison_refused_before_training_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "out"
    config = write_config(tmp_path / "c.yaml", tmp_path / "cache", out, dataset=str(tmp_path / "none.txt"))
    assert compare_main(["--config", str(config)]) == 2
    assert "none.txt" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
