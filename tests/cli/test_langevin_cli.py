"""`--guide langevin` from the command line: trains and resumes exactly, samples reproducibly, and is
scored only by the protocols that need no density (prefix-predictive); asking for IWAE is refused."""

from __future__ import annotations

import json
import math

import pytest

from ltm.evaluate import main as evaluate_main
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from tests.cli_helpers import one_thread, shared_paths, tiny_flags, train_losses  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
LANGEVIN = ["--guide", "langevin", "--inner-steps", "4",
            "--guide-kwargs", '{"step_size": 0.01, "mala": true}']


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A straight 4-step run and one trained 2 steps then resumed to 4: (straight, split, stdout)."""
    import torch

    corpus, cache = shared_paths(tmp_path_factory)
    base = tmp_path_factory.mktemp("langevin")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        flags = dict(max_steps=4, save_every=2, eval_every=2, lr_decay_steps=4)
        straight, split = base / "straight", base / "split"
        assert train_main([*tiny_flags(corpus, cache, straight, **flags), *LANGEVIN]) == 0
        assert train_main([*tiny_flags(corpus, cache, split, **{**flags, "max_steps": 2}), *LANGEVIN]) == 0
        assert train_main([*tiny_flags(corpus, cache, split, **flags), *LANGEVIN, "--resume", "auto"]) == 0
    finally:
        torch.set_num_threads(threads)
    return straight, split


def test_trains_and_resumes_exactly_without_calling_its_loss_a_bound(runs, capsys):
    straight, split = runs
    a, b = train_losses(straight), train_losses(split)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert all("perplexity_bound" not in r and "kl" not in r and "neg_log_prior" in r for r in train)
    assert [r["protocol"] for r in val] == ["prefix_predictive"] * 2
    assert all(math.isfinite(r["nll"]) and "neg_elbo" not in r for r in val)


def test_samples_reproducibly(runs, capsys):
    args = ["--checkpoint", str(runs[0]), "--prompt", "the cat sat", "--max-new-tokens", "5", "--seed", "3"]
    assert sample_main(args) == 0
    first = capsys.readouterr().out
    assert "the cat sat" in first
    assert sample_main(args) == 0 and capsys.readouterr().out == first


def test_evaluate_shows_prefix_predictive_only(runs, capsys, tmp_path):
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(runs[0]), "--inner-steps", "0,4", "--batches", "1",
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.lstrip().startswith("K "))
    assert header.split() == ["K", "prefix", "ppl"]
    assert "not shown: the fresh-noise ELBO, importance-weighted bound and published protocol" in printed
    report = json.loads(out.read_text())
    assert report["protocols"] == ["prefix"] and list(report["labels"]) == ["prefix_predictive"]
    assert [r["inner_steps"] for r in report["results"]] == [0, 4]
    for row in report["results"]:
        assert set(row) == {"inner_steps", "prefix_predictive", "diagnostics"}
        assert math.isfinite(row["prefix_predictive"]["nll"]) and row["diagnostics"] is None


@pytest.mark.parametrize("args, want", [
    (["--protocols", "iwae"], "--protocols iwae: the importance-weighted bound needs log q(z), but guide "
                              "LangevinGuide has no tractable density"),
    (["--protocols", "prefix,elbo"], "--protocols elbo: the fresh-noise ELBO needs log q(z)"),
    (["--long-fit", "8"], "--long-fit: the gap to a long fit"),
    (["--protocols", "bogus"], "--protocols takes a comma list of elbo, iwae, prefix, published"),
])
def test_requests_that_need_a_density_are_refused_in_one_sentence(runs, capsys, args, want):
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(runs[0]), "--inner-steps", "2", "--batches", "1", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and want in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before any work
