"""`python -m ltm.prepare`: shards that `python -m ltm.train --dataset DIR` trains on, a stop on
SIGTERM that the same command resumes, and user errors as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ltm.prepare import main
from tests.cli_helpers import REPO, one_thread, run_module, tiny_flags, train_losses, write_corpus  # noqa: F401
from tests.data.test_data import make_docs, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prepare_then_train_on_the_shards(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "prepared"
    flags = ["--dataset", str(corpus), "--out-dir", str(out), "--vocab-size", "300", "--shard-tokens", "2000",
             "--chunk-chars", "4000"]
    proc = run_module("ltm.prepare", *flags, "--num-proc", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"train with python -m ltm.train --dataset {out}" in proc.stdout
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and len(index["shards"]) > 3
    run = tmp_path / "run"
    proc = run_module("ltm.train", *tiny_flags(out, tmp_path / "cache", run, max_steps=2, eval_every=2))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [s for s, _ in train_losses(run)] == [1, 2]
    assert not (tmp_path / "cache").exists()  # the shards are read in place


def test_sigterm_stops_and_the_same_command_resumes(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", paragraphs=600)
    out, straight = tmp_path / "stopped", tmp_path / "straight"
    flags = ["--dataset", str(corpus), "--vocab-size", "300", "--shard-tokens", "2000",
             "--chunk-chars", "900"]
    assert main([*flags, "--out-dir", str(straight)]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # the child stops itself on SIGTERM once its second shard is on disk
    code = ("import os, signal, sys\nfrom ltm.data import shard_prep\nfrom ltm.prepare import main\n"
            "real = shard_prep._finish\n"
            "def finish(*a, **k):\n    real(*a, **k)\n"
            "    if a[2].k == 1: os.kill(os.getpid(), signal.SIGTERM)\n"
            "shard_prep._finish = finish\nsys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *flags, "--out-dir", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "run the same command again to resume" in proc.stderr
    assert len(json.loads((out / "index.json").read_text())["shards"]) == 2
    started = time.perf_counter()
    assert main([*flags, "--out-dir", str(out)]) == 0
    assert time.perf_counter() - started < 60
    read = {p.name: p.read_bytes() for p in out.iterdir()}
    assert read == {p.name: p.read_bytes() for p in straight.iterdir()}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # main() put the handler back


@pytest.mark.parametrize("args, message", [
    (["--num-proc", "0"], "error: --num-proc must be at least 1, got 0."),
    (["--shard-tokens", "0"], "error: shard_tokens must be at least 1, got 0."),
    (["--tokenizer", "missing.json"], "error: tokenizer file 'missing.json' does not exist"),
    (["--text-field", "body"], "error: dataset 'DATA' has no column 'body'; its columns are ['text', 'id']"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", make_docs(5))
    out = tmp_path / "out"
    assert main(["--dataset", str(corpus), "--out-dir", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.replace("DATA", str(corpus))) and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
