"""`python -m ltm.evaluate`: the fresh-noise ELBO bound per inner-step budget, as a table and JSON."""

from __future__ import annotations

import json

import pytest

from ltm.evaluate import main
from tests.cli_helpers import one_thread, shared_paths, shared_run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_budgets_table_and_json(capsys, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    out = tmp_path / "eval.json"
    capsys.readouterr()  # drop the shared run's training log
    assert main(["--checkpoint", str(run), "--inner-steps", "0,2,4", "--batches", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "upper bound" in printed and "ppl bound" in printed
    report = json.loads(out.read_text())
    assert "bound" in report["label"] and report["checkpoint"].endswith("step_000006")
    rows = report["results"]
    assert [r["inner_steps"] for r in rows] == [0, 2, 4]
    assert rows[0]["kl"] == 0.0  # K = 0: q is still the prior
    for r in rows:
        assert r["neg_elbo"] == pytest.approx(r["reconstruction"] + r["kl"])
        assert r["perplexity_bound"] == pytest.approx(2.718281828 ** r["neg_elbo"], rel=1e-6)
        assert r["tokens"] == 2 * 8 * 32


def test_data_file_and_bad_budgets(capsys, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    corpus, _ = shared_paths(tmp_path_factory)
    assert main(["--checkpoint", str(run), "--data", str(corpus), "--inner-steps", "1",
                 "--batches", "1"]) == 0
    assert str(corpus) in capsys.readouterr().out
    assert main(["--checkpoint", str(run), "--inner-steps", "a,b"]) == 2
    assert capsys.readouterr().err.startswith("error: --inner-steps must be a comma list")
