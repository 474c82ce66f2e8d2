"""Training on a reasoning task (`--dataset reasoning:...`) and scoring it with `ltm.evaluate --task`."""

from __future__ import annotations

import json

import pytest
import torch

from ltm.evaluate import main as evaluate_main
from ltm.train import main as train_main
from tests.cli_helpers import one_thread, shared_run, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = "reasoning:addition?digits=2&examples=300"


def reasoning_flags(tmp_path, dataset=TASK, **overrides):
    values = {"vocab_size": 262, "block_size": 48, "max_steps": 4, "save_every": 4, "eval_every": 4,
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


def test_one_example_per_block_and_direct_answers_without_the_steps(tmp_path):
    from ltm.data import DataConfig, decode, prepare_data

    direct = "reasoning:addition?digits=2&examples=300&steps=0"
    data = prepare_data(DataConfig(dataset=direct, vocab_size=262, block_size=48), tmp_path / "cache")
    assert len(data.train) + len(data.val) == 300
    for block in data.train.batch(range(20)):  # (T+1,) each
        ids = block.tolist()
        assert ids[0] == data.bos_id and ids.count(data.eos_id) == 1
        assert set(ids[ids.index(data.eos_id) + 1:]) <= {data.pad_id}
        text = decode(data.tokenizer, block)
        assert text.count("=?\n#### ") == 1 and "+0=" not in text.split("=?")[1]


def test_the_curriculum_moves_the_stage_and_a_resumed_run_equals_a_straight_one(tmp_path, capsys):
    import torch

    from ltm.training.checkpoint import load_checkpoint

    task = "reasoning:addition?digits=2&examples=300&stages=2&stage_steps=2"
    straight = reasoning_flags(tmp_path / "a", dataset=task, max_steps=6, save_every=3, eval_every=3,
                               lr_decay_steps=6)
    assert train_main([*straight, "--model", "coconut"]) == 0
    records = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records if r["split"] == "train"] == [0, 0, 1, 1, 2, 2]
    out = tmp_path / "eval.json"
    assert evaluate_main(["--checkpoint", str(tmp_path / "a" / "run"), "--task", "run",
                          "--task-examples", "4", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["reasoning"]  # asked with the last stage's two thoughts
    assert row["spec"] == "reasoning:addition?digits=2" and row["examples"] == 4 and row["answer_nll"] > 0
    first = reasoning_flags(tmp_path / "b", dataset=task, max_steps=3, save_every=3, eval_every=3,
                            lr_decay_steps=6)
    assert train_main([*first, "--model", "coconut"]) == 0
    resumed = reasoning_flags(tmp_path / "b", dataset=task, max_steps=6, save_every=3, eval_every=3,
                              lr_decay_steps=6)
    assert train_main([*resumed, "--model", "coconut", "--resume", "auto"]) == 0
    a, b = (load_checkpoint(tmp_path / x / "run")[0].state_dict() for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()


def test_coconut_on_prose_or_with_other_ids_is_refused(tmp_path_factory, tmp_path, capsys):
    from tests.cli_helpers import shared_paths

    corpus, cache = shared_paths(tmp_path_factory)
    flags = tiny_flags(corpus, cache, tmp_path / "prose", max_steps=1)
    assert train_main([*flags, "--model", "coconut"]) == 2
    assert "train on a reasoning task" in capsys.readouterr().err
    flags = reasoning_flags(tmp_path, dataset="reasoning:addition?digits=2&examples=300", max_steps=1)
    assert train_main([*flags, "--model", "coconut", "--coconut.thought-id", "7"]) == 2
    err = capsys.readouterr().err
    assert "set --coconut.thought-id 5" in err and err.count("\n") == 1


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


@pytest.mark.parametrize("mask, before", [("question", "=?\n"), ("steps", "+0=")])
def test_mask_leaves_the_question_or_all_but_the_answer_out_of_the_loss(tmp_path, mask, before):
    from ltm.core.loss_mask import block_ids, is_masked
    from ltm.data import DataConfig, decode, prepare_data

    spec = "reasoning:addition?digits=2&examples=300"
    cfg = dict(vocab_size=262, block_size=48)
    plain = prepare_data(DataConfig(dataset=spec, **cfg), tmp_path / "cache")
    data = prepare_data(DataConfig(dataset=f"{spec}&mask={mask}", **cfg), tmp_path / "cache")
    blocks = data.train.batch(range(20))  # (20, T+1)
    assert torch.equal(block_ids(blocks), plain.train.batch(range(20)))  # the same ids, some marked
    for block in blocks:
        hidden = is_masked(block)  # (T+1,)
        n = int(hidden.sum())
        assert n > 0 and hidden[1:1 + n].all()  # one run, right after BOS
        given = decode(data.tokenizer, block_ids(block)[1:1 + n])
        scored = decode(data.tokenizer, block[1 + n:])
        assert given.endswith(before) if mask == "question" else before in given
        assert scored.startswith("#### ") == (mask == "steps") and "=?" not in scored
    assert train_main([*reasoning_flags(tmp_path, dataset=f"{spec}&mask={mask}"), "--model", "vanilla"]) == 0
