"""Every model family trains for a few steps and samples from the command line."""

from __future__ import annotations

import json
import math

import pytest

from ltm.families import MODELS
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from tests.cli_helpers import one_thread, shared_paths, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILY_FLAGS = {
    "ltm": [],
    "vanilla": [],
    "ponderlm2": ["--thoughts", "2", "--jacobi-sweeps", "2"],
    "ponderlm": ["--ponder-passes", "2"],
    "adaptive_cot": ["--max-latent-steps", "2", "--prune-threshold", "0.05"],
    "pause": ["--thoughts", "1"],
    "looped": ["--loops", "2"],
    "ponderlm2_stochastic": ["--guide", "ltm.ponder.ponderlm2_stochastic:ThoughtGuide"],
}


def test_every_registered_family_is_covered():
    assert set(MODELS) == set(FAMILY_FLAGS)


@pytest.mark.parametrize("family", sorted(FAMILY_FLAGS))
def test_family_trains_and_samples(family, tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / family
    flags = tiny_flags(corpus, cache, run, max_steps=3, save_every=3, eval_every=3, lr_decay_steps=3)
    assert train_main([*flags, "--model", family, *FAMILY_FLAGS[family]]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 3 and all(math.isfinite(r["loss"]) for r in train)
    if family == "adaptive_cot":  # the mean number of latent steps per token is reported
        assert all(0 <= r["mean_latent_steps"] <= 2 for r in train)
    args = ["--checkpoint", str(run), "--prompt", "the cat sat", "--max-new-tokens", "5", "--seed", "3"]
    assert sample_main(args) == 0
    first = capsys.readouterr().out
    assert "the cat sat" in first
    assert sample_main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same text
