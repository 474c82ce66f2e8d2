"""Training on a reasoning task (`--dataset reasoning:...`) and scoring it with `ltm.evaluate --task`."""

from __future__ import annotations

import json

import pytest

from ltm.evaluate import main as evaluate_main
from ltm.train import main as train_main
from tests.cli_helpers import one_thread, shared_run, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = "reasoning:addition?digits=2&examples=300"


def reasoning_flags(tmp_path, dataset=TASK, **overrides):
    values = {"vocab_size": 259, "block_size": 48, "max_steps": 4, "save_every": 4, "eval_every": 4,
              "lr_decay_steps": 4, **overrides}
    return tiny_flags(dataset, tmp_path / "cache", tmp_path / "run", **values)


def test_a_run_on_a_reasoning_task_is_scored_by_difficulty(tmp_path, capsys):
    assert train_main([*reasoning_flags(tmp_path), "--model", "vanilla"]) == 0
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(tmp_path / "run"), "--task", "run", "--difficulties", "1,2",
                          "--task-examples", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "GFLOP/answer" in printed
    report = json.loads(out.read_text())
    assert "results" not in report or report["results"] == []  # --task alone scores no held-out blocks
    rows = report["reasoning"]
    assert [r["spec"] for r in rows] == ["reasoning:addition?digits=1", "reasoning:addition?digits=2"]
    for r in rows:
        assert r["examples"] == 6 and 0.0 <= r["accuracy"] <= 1.0 and r["with_steps"] is True
        assert r["answer_nll"] > 0 and r["tokens_per_answer"] > 0 and r["flops_per_answer"] > 0


def test_direct_answers_are_trained_without_the_steps(tmp_path):
    from ltm.data import DataConfig, decode, prepare_data

    direct = "reasoning:addition?digits=2&examples=300&steps=0"
    data = prepare_data(DataConfig(dataset=direct, vocab_size=259, block_size=48), tmp_path / "cache")
    text = decode(data.tokenizer, data.train.tokens[:400])
    assert "=?\n#### " in text and "+0=" not in text.replace("=?", "")


@pytest.mark.parametrize("args, words", [
    (["--task", "run"], "was trained on"),
])
def test_task_on_a_prose_run_is_refused(tmp_path_factory, capsys, args, words):
    run = shared_run(tmp_path_factory)
    assert evaluate_main(["--checkpoint", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "reasoning:" in err and err.count("\n") == 1


def test_an_unknown_task_or_difficulty_is_refused_in_one_sentence(tmp_path, capsys):
    assert train_main([*reasoning_flags(tmp_path, max_steps=1, save_every=1, eval_every=1,
                                        lr_decay_steps=1), "--model", "vanilla"]) == 0
    capsys.readouterr()
    for args, words in ((["--task", "sorting"], "unknown reasoning task 'sorting'"),
                        (["--task", "run", "--difficulties", "0"], "digits must be an integer from 1"),
                        (["--task", "run", "--difficulties", "9"], "more than the model's block size 48")):
        assert evaluate_main(["--checkpoint", str(tmp_path / "run"), *args, "--task-examples", "2"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_a_task_whose_examples_do_not_fit_the_block_is_refused_before_training(tmp_path, capsys):
    flags = reasoning_flags(tmp_path, dataset="reasoning:multiplication?digits=4&examples=50", block_size=24)
    assert train_main([*flags, "--model", "vanilla"]) == 2
    err = capsys.readouterr().err
    assert "raise --block-size to at least" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
