"""Numbers over seeds: the difference from a control, its standard error, and the verdict."""

from __future__ import annotations

import math

import pytest

from ltm.eval.seed_stats import difference, format_mean_sd, verdict

WORDS = {"baseline": "the same-window vanilla", "params": "the parameter-matched vanilla",
         "fixed_latent": "its fixed-latent control"}


def test_the_difference_and_its_welch_standard_error_equal_their_hand_computation():
    run, control = [3.90, 3.92, 3.88], [3.95, 3.99, 3.94]
    d = difference(run, control)
    var_a = sum((x - 3.90) ** 2 for x in run) / 2  # sample variances
    var_b = sum((x - 3.96) ** 2 for x in control) / 2
    assert d.mean == pytest.approx(3.90 - 3.96)
    assert d.se == pytest.approx(math.sqrt(var_a / 3 + var_b / 3))
    assert d.significant == (abs(d.mean) > 2 * d.se) and d.win and not d.loss
    assert d.meets(0.03) and not d.meets(0.07)
    assert format_mean_sd(run) == "3.9000 ± 0.0200"


def test_one_seed_has_no_standard_error_and_is_never_significant():
    d = difference([3.5], [3.9])
    assert d.se is None and not d.significant and not d.win


def test_the_verdict_names_wins_losses_and_the_target():
    diffs = {"baseline": {16: difference([3.80, 3.81, 3.79], [3.90, 3.91, 3.89])},
             "params": {16: difference([3.80, 3.81, 3.79], [3.79, 3.80, 3.78])},
             "fixed_latent": {16: difference([3.80, 3.81, 3.79], [3.81, 3.85, 3.77])}}
    text = verdict("ltm", diffs, WORDS, 16, ("baseline", "params", "fixed_latent"))
    assert text.startswith("ltm beats the same-window vanilla at K=16 (beyond 2 SE), is within 2 SE "
                           "of the parameter-matched vanilla (+0.0100 ± 0.0082) and its fixed-latent "
                           "control (-0.0100 ± ")
    assert "loses to the parameter-matched vanilla at K=16" not in text  # +0.01 with sd 0.01: within
    assert text.endswith("at K=16, beyond 2 SE): not met.")
    met = verdict("ltm", {"baseline": diffs["baseline"]}, WORDS, 16, ("baseline",))
    assert met.endswith("met.") and not met.endswith("not met.")
