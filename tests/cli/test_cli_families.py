"""Every model family trains (its loss falls) and samples from the command line."""

from __future__ import annotations

import json
import math

import pytest

from ltm.families import FAMILIES
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from ltm.training.checkpoint import load_checkpoint
from tests.cli_helpers import one_thread, shared_paths, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 6

FAMILY_FLAGS = {
    "ltm": [],
    "vanilla": [],
    "ponderlm2": ["--ponderlm2.thoughts", "2", "--ponderlm2.jacobi-sweeps", "2"],
    "ponderlm": ["--ponderlm.passes", "2"],
    "adaptive_cot": ["--adaptive-cot.max-steps", "2", "--adaptive-cot.prune-threshold", "0.05"],
    "pause": ["--pause.pauses", "1"],
    "looped": ["--looped.loops", "2"],
    "ponderlm2_stochastic": [],  # its default guide: ThoughtGuide
    "coconut": ["--dataset", "reasoning:addition?digits=2&examples=400&stages=2&stage_steps=2",
                "--vocab-size", "300", "--block-size", "40"],  # a task with its thought tokens
    # its guide: CoconutThoughtGuide; one thought (no chain of noisy thoughts, whose KL would grow
    # with each stage) and an inner step small against the thoughts' sigma 0.1
    "coconut_stochastic": ["--dataset", "reasoning:addition?digits=2&examples=400&stages=1&stage_steps=1",
                           "--vocab-size", "300", "--block-size", "40", "--inner.lr", "0.01"],
}


def test_every_registered_family_is_covered():
    assert set(FAMILIES) == set(FAMILY_FLAGS)
    assert all(family.name == name for name, family in FAMILIES.items())


@pytest.mark.parametrize("family", sorted(FAMILY_FLAGS))
def test_family_trains_and_samples(family, tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / family
    flags = tiny_flags(corpus, cache, run, max_steps=STEPS, save_every=STEPS, eval_every=STEPS,
                       lr_decay_steps=STEPS, lr=1e-2)
    assert train_main([*flags, "--model", family, *FAMILY_FLAGS[family]]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) / 2 < losses[0] - 0.3, losses  # it learns: the loss falls
    model = load_checkpoint(run)[0]
    for key in model.metrics():  # every metric the family reports is logged at every step
        assert all(key in r for r in records if r["split"] == "train")
    if family == "adaptive_cot":
        assert all(0 <= r["mean_latent_steps"] <= 2 for r in records if r["split"] == "train")
    args = ["--checkpoint", str(run), "--prompt", "the cat sat", "--max-new-tokens", "5", "--seed", "3"]
    assert sample_main(args) == 0
    first = capsys.readouterr().out
    assert "the cat sat" in first
    assert sample_main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same text
