"""Deterministic families are trained and evaluated as what they are: exact NLL, no K, q or noise."""

from __future__ import annotations

import re

import pytest

from ltm.evaluate import main as evaluate_main
from ltm.train import main as train_main
from tests.cli_helpers import one_thread, shared_paths, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT_WORDING = re.compile(r"K\s*=|\bK\b|\bq\(|fresh[- ]noise|inner step|posterior|ELBO|\bKL\b")


@pytest.mark.parametrize("family", ["vanilla", "ponderlm2"])
def test_deterministic_families_print_no_latent_wording(family, tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / family
    flags = tiny_flags(corpus, cache, run, max_steps=2, save_every=2, eval_every=1, lr_decay_steps=2)
    assert train_main([*flags, "--model", family]) == 0
    assert evaluate_main(["--checkpoint", str(run), "--inner-steps", "0,4,16", "--batches", "1",
                          "--iwae-samples", "2"]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "exact NLL" in text
    assert not LATENT_WORDING.search(text), LATENT_WORDING.search(text).group(0)


def test_a_stochastic_family_keeps_its_protocols(tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "ltm"
    flags = tiny_flags(corpus, cache, run, max_steps=2, save_every=2, eval_every=2, lr_decay_steps=2)
    assert train_main([*flags, "--model", "ltm"]) == 0
    text = capsys.readouterr().out
    assert "K=" in text and "fresh-noise ELBO bound" in text and "active units" in text
