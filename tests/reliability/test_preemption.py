"""SIGTERM and SIGINT stop training cleanly: the current step is finished and saved, one line says
so, the exit status is 143 or 130, and a resume equals a straight run (issue: SIGTERM killed the
run at once with no save; SIGINT did not save either)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ltm.train import main as train_main
from ltm.training import preemption
from ltm.training.checkpoint import step_dirs
from ltm.training.preemption import StopSignals
from tests.cli_helpers import REPO, one_thread, shared_paths, tiny_flags, train_losses  # noqa: F401
from tests.reliability.helpers import ENV, start_training, train_steps, wait_for

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 60
RUN = dict(max_steps=STEPS, lr_decay_steps=STEPS, save_every=0, eval_every=0, precision="fp32")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path_factory.mktemp("straight") / "run"
    assert train_main(tiny_flags(corpus, cache, run, **RUN)) == 0
    return run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_the_current_step_and_resume_equals_straight(signum, straight, tmp_path,
                                                                         tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    proc = start_training(tiny_flags(corpus, cache, run, **RUN))
    wait_for(lambda: len(train_steps(run)) >= 3, proc, "three steps")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    stopped = train_steps(run)[-1]
    assert 3 <= stopped < STEPS, "the run should stop mid-way"
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == (f"{name}: stopped at step {stopped}, saved "
                                            f"{run / f'step_{stopped:06d}'}; continue with --resume auto")
    assert [s for s, _ in step_dirs(run)] == [stopped]
    assert train_main(["--out-dir", str(run), "--resume", "auto", "--no-progress"]) == 0
    assert train_losses(run) == train_losses(straight)
    a, b = (load_file(r / f"step_{STEPS:06d}" / "model.safetensors") for r in (straight, run))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_signal_aborts_at_once(monkeypatch):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive run
    try:
        _second_signal_aborts(monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _second_signal_aborts(monkeypatch):
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # the first: a request, nothing raised
        os.kill(os.getpid(), signal.SIGTERM)  # at once again: one preemption delivered twice
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        monkeypatch.setattr(preemption, "SAME_PREEMPTION_S", 0.0)
        with pytest.raises(SystemExit) as aborted:  # a later SIGTERM: abort
            os.kill(os.getpid(), signal.SIGTERM)
        assert aborted.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a job started with `&`
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signum is None
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_stop_on_a_step_due_for_validation_validates_and_saves_once(tmp_path, tmp_path_factory,
                                                                    monkeypatch):
    """The signal lands during the last step before validation and checkpoint are due: both are
    written for that step, once, and the run stops there."""
    from ltm.core.errors import Preempted
    from ltm.training import trainer as trainer_module
    from ltm.training.config import TrainConfig

    class SignalAtStep3(StopSignals):
        @property
        def signum(self):
            return signal.SIGTERM if run.step >= 3 else None

        @signum.setter
        def signum(self, value):
            pass

    monkeypatch.setattr(trainer_module, "StopSignals", SignalAtStep3)
    corpus, cache = shared_paths(tmp_path_factory)
    run = trainer_module.Trainer(TrainConfig.from_dict(dict(
        dataset=str(corpus), cache_dir=str(cache), out_dir=str(tmp_path / "run"), vocab_size=300,
        block_size=32, d_model=32, n_layer=2, n_head=2, batch_size=8, max_steps=10, eval_every=3,
        save_every=3, eval_batches=1, progress=False, ltm={"n_latent": 2, "d_latent": 8})))
    with pytest.raises(Preempted, match="stopped at step 3"):
        run.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records][-2:] == [(3, "train"), (3, "val")]
    assert [s for s, _ in step_dirs(tmp_path / "run")] == [3]


def test_under_two_processes_every_rank_stops_at_the_same_step(tmp_path, tmp_path_factory):
    """SIGTERM to rank 1 alone: both ranks agree to stop after the same step, rank 0 saves it."""
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    flags = tiny_flags(corpus, cache, run, **{**RUN, "max_steps": 100_000, "lr_decay_steps": 100_000})
    procs = [subprocess.Popen([sys.executable, "-m", "ltm.train", *flags], cwd=REPO,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        wait_for(lambda: len(train_steps(run)) >= 3, procs[0], "three steps")
        procs[1].send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [143, 143], errs
    stopped = train_steps(run)[-1]
    assert [s for s, _ in step_dirs(run)] == [stopped]
    assert f"stopped at step {stopped}, saved" in errs[0]
