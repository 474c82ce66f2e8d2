"""`python -m ltm.compare`: a tiny comparison writes its table and per-run scores, resumes where it
stopped without retraining finished runs, and refuses bad configs in one sentence before training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ltm.compare import main
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)

COMMON = dict(dataset="embedded", max_documents=40, vocab_size=300, block_size=32, d_model=32,
              n_layer=1, n_head=2, batch_size=4, max_steps=4, warmup_steps=1, eval_every=2,
              eval_batches=1, save_every=2, keep_last=0, progress=False)
RUNS = [{"name": "vanilla", "model": "vanilla"},
        {"name": "ltm", "model": "ltm", "inner_steps": 2, "ltm": {"n_latent": 2, "d_latent": 8}},
        {"name": "p2", "model": "ponderlm2", "ponderlm2": {"thoughts": 1}}]
EVAL = dict(inner_steps=[0, 2], batches=1, iwae_samples=2, protocol_steps=2, long_fit=3)


def write_config(path: Path, cache: Path, out_dir: Path, runs=None, **common) -> Path:
    data = {"name": "tiny", "out_dir": str(out_dir), "eval": EVAL,
            "common": {**COMMON, "cache_dir": str(cache), **common},
            "runs": RUNS if runs is None else runs}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def table_rows(results: str) -> dict[str, str]:
    """The rows of the first table (the results), by run name."""
    table = results.split("| run |")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    return {row.split("|")[1].strip(): row for row in rows}


def latent_rows(results: str) -> list[list[str]]:
    """The cells of the latent-use table (one row per stochastic run and K)."""
    table = results.split("Latent use")[1].split("\n\n")[1]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()[2:]]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One tiny comparison of three runs, run once for the module: (config, out_dir, stdout)."""
    import torch

    base = tmp_path_factory.mktemp("compare")
    config = write_config(base / "tiny.yaml", base / "cache", base / "out")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from contextlib import redirect_stdout
        from io import StringIO

        out = StringIO()
        with redirect_stdout(out):
            assert main(["--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    return config, base / "out", out.getvalue()


def test_writes_the_table_and_each_runs_scores(compared):
    _, out_dir, _ = compared
    results = (out_dir / "results.md").read_text()
    rows = table_rows(results)
    assert set(rows) == {"vanilla", "ltm", "p2"}
    for det in ("vanilla", "p2"):  # deterministic families: one exact NLL, no budget K
        assert "exact NLL" in rows[det] and "K=" not in rows[det]
    assert "K=0" in rows["ltm"] and "K=2" in rows["ltm"] and "exact NLL" not in rows["ltm"]
    latent = latent_rows(results)  # the LTM's latent use at each K; deterministic runs have none
    assert [(r[0], r[1]) for r in latent] == [("ltm", "0"), ("ltm", "2")]
    assert latent[0][4].startswith("0/") and float(latent[0][5]) == pytest.approx(0.0, abs=1e-6)
    assert all(float(r[3]) == float(r[3]) for r in latent)  # a gap to the 3-step fit, a number
    for heading in ("training FLOPs", "importance-weighted bound, K=2, S=2",
                    "prefix-predictive NLL, K=2", "fresh-noise ELBO bound by K", "cores"):
        assert heading in results
    for name in ("vanilla", "ltm", "p2"):
        report = json.loads((out_dir / name / "eval.json").read_text())
        assert report["step"] == 4
        cost = json.loads((out_dir / name / "cost.json").read_text())
        assert cost["flops_per_step"] > 0 and cost["training_flops"] == 4 * cost["flops_per_step"]
        assert cost["train_segments"][0]["to_step"] == 4
    ltm = json.loads((out_dir / "ltm" / "eval.json").read_text())
    assert [b["inner_steps"] for b in ltm["fresh_noise_elbo"]] == [0, 2]
    assert ltm["importance_weighted"]["inner_steps"] == 2 and "prefix_predictive" in ltm
    assert "exact_nll" in json.loads((out_dir / "vanilla" / "eval.json").read_text())
    for png in ("val_bound_vs_tokens.png", "val_bound_vs_flops.png", "eval_bound_vs_k.png"):
        pytest.importorskip("matplotlib")
        assert (out_dir / png).stat().st_size > 0


@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_comparison_resumes_where_it_stopped(compared, tmp_path, capsys):
    config, done_dir, _ = compared
    out_dir = tmp_path / "out"
    shutil.copytree(done_dir, out_dir)  # keeps mtimes
    before = json.loads((out_dir / "p2" / "eval.json").read_text())
    # Stopped in the middle of the last run: its final checkpoint and its scores are missing.
    shutil.rmtree(out_dir / "p2" / "step_000004")
    (out_dir / "p2" / "eval.json").unlink()
    (out_dir / "p2" / "latest").write_text("step_000002\n")
    first = {p: p.stat().st_mtime_ns for name in ("vanilla", "ltm") for p in (out_dir / name).rglob("*")}
    assert main(["--config", str(config), "--out-dir", str(out_dir)]) == 0
    log = capsys.readouterr().out
    assert "[1/3] vanilla: trained to step 4 and scored already; skipped" in log
    assert "resumed from" in log and "step_000002 at step 2" in log
    assert first == {p: p.stat().st_mtime_ns for p in first}  # nothing of the first runs rewritten
    after = json.loads((out_dir / "p2" / "eval.json").read_text())
    assert after["exact_nll"]["nll"] == before["exact_nll"]["nll"]  # resumed exactly
    segments = json.loads((out_dir / "p2" / "cost.json").read_text())["train_segments"]
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 4), (2, 4)]
    assert set(table_rows((out_dir / "results.md").read_text())) == {"vanilla", "ltm", "p2"}


BAD = {
    "a run changes block_size": (dict(runs=[RUNS[0], {"name": "wide", "model": "vanilla", "block_size": 64}]),
                                 ("must share", "run 'wide'", "block_size")),
    "unknown family": (dict(runs=[RUNS[0], {"name": "odd", "model": "nosuch"}]), ("run 'odd'", "nosuch")),
    "missing dataset": (dict(dataset="no/such/corpus.txt"), ("dataset", "no/such/corpus.txt")),
    "duplicate names": (dict(runs=[RUNS[0], {"name": "vanilla", "model": "ltm"}]),
                        ("run name 'vanilla'", "twice")),
    "no runs": (dict(runs=[]), ("names no runs",)),
    "a run sets out_dir": (dict(runs=[{"name": "x", "model": "vanilla", "out_dir": "elsewhere"}]),
                           ("run 'x'", "out_dir")),
    "a guide without a density": (dict(runs=[RUNS[0], {"name": "map", "model": "ltm", "guide": "delta"}]),
                                  ("run 'map'", "guide 'delta' has no tractable density", "ltm.evaluate")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configs_are_refused_in_one_sentence_before_training(case, tmp_path, capsys):
    values, expected = BAD[case]
    out_dir = tmp_path / "out"
    config = write_config(tmp_path / "bad.yaml", tmp_path / "cache", out_dir, **values)
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]
    assert not list(tmp_path.rglob("step_*")) and not list(tmp_path.rglob("metrics.jsonl"))


@pytest.mark.usefixtures("one_thread")
def test_a_run_folder_trained_with_another_config_is_refused(compared, tmp_path, capsys):
    config, done_dir, _ = compared
    changed = yaml.safe_load(config.read_text())
    changed["runs"][1]["fast_lr"] = 0.1
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "run 'ltm'" in err and "fast_lr" in err and str(done_dir / "ltm") in err


def test_early_inference_steps_are_counted_at_their_own_cost():
    import torch

    from ltm.eval.flops import step_cost
    from ltm.training.config import TrainConfig

    base = dict(d_model=16, n_layer=1, n_head=2, block_size=8, max_steps=10, inner_steps=1,
                ltm={"n_latent": 2, "d_latent": 4})
    batch = torch.randint(0, 32, (2, 9))  # (B, T+1)
    plain = step_cost(TrainConfig.from_dict(base), 32, batch)
    early = step_cost(TrainConfig.from_dict({**base, "early_inner_steps": 5, "early_inference_steps": 4}),
                      32, batch)
    assert plain["training_flops"] == 10 * plain["flops_per_step"]
    assert early["flops_per_step"] == plain["flops_per_step"]
    assert early["training_flops"] > plain["training_flops"]  # 4 steps at 5 inner steps, 6 at 1


def test_the_evaluation_fit_may_differ_from_the_training_one():
    from ltm.core.errors import ConfigError
    from ltm.eval.comparison import EvalSettings
    from ltm.training.config import TrainConfig

    cfg = TrainConfig.from_dict({"fast_optimizer": "adam", "fast_lr": 0.3})
    own = EvalSettings().inner(cfg, 16)
    assert (own.optimizer, own.lr, own.steps) == ("adam", 0.3, 16)
    settings = EvalSettings(inner_loop={"optimizer": "sgd", "lr": 0.1})
    settings.check("test")
    assert (settings.inner(cfg, 4).optimizer, settings.inner(cfg, 4).lr) == ("sgd", 0.1)
    with pytest.raises(ConfigError, match="not \\['steps'\\]"):
        EvalSettings(inner_loop={"steps": 3}).check("test")
    with pytest.raises(ConfigError, match="unknown fast optimizer"):
        EvalSettings(inner_loop={"optimizer": "lbfgs"}).check("test")


def _numbers(report: dict) -> dict:
    """A run's scores without its timings."""
    return {k: v for k, v in report.items() if k not in ("eval_seconds", "seconds", "checkpoint")}


def test_jobs_train_runs_at_once_with_the_same_numbers(compared, tmp_path, capfd):
    """`--jobs 2`: the runs train in two processes; every score equals the sequential run's."""
    _, done_dir, _ = compared
    config = write_config(tmp_path / "tiny.yaml", done_dir.parent / "cache", tmp_path / "out")
    assert main(["--config", str(config), "--jobs", "2"]) == 0
    out = capfd.readouterr().out  # the workers write to the file descriptor
    assert "3 run(s), 2 at a time" in out and out.count(": done; wrote") == 3
    for name in ("vanilla", "ltm", "p2"):
        mine = json.loads((tmp_path / "out" / name / "eval.json").read_text())
        sequential = json.loads((done_dir / name / "eval.json").read_text())
        assert _numbers(mine) == _numbers(sequential), name
    assert set(table_rows((tmp_path / "out" / "results.md").read_text())) == {"vanilla", "ltm", "p2"}
    assert main(["--config", str(config), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capfd.readouterr().err
