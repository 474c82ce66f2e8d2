"""`python -m ltm.evaluate`: the four labelled protocols per inner-step budget, as a table, JSON and PNG."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ltm.evaluate import PROTOCOLS, main
from tests.cli_helpers import one_thread, shared_paths, shared_run, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def vanilla_run(tmp_path_factory):
    """A tiny vanilla (deterministic) run trained once per session; treat as read-only."""
    from ltm.train import main as train_main

    corpus, cache = shared_paths(tmp_path_factory)
    run_dir = tmp_path_factory.getbasetemp() / "ltm-shared" / "vanilla"
    if not (run_dir / "latest").exists():
        flags = tiny_flags(corpus, cache, run_dir, max_steps=3, save_every=3, eval_every=3, lr_decay_steps=3)
        assert train_main([*flags, "--model", "vanilla"]) == 0
    return run_dir


def test_all_protocols_json_and_plot(capsys, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    out, png = tmp_path / "eval.json", tmp_path / "curve.png"
    capsys.readouterr()  # drop the shared run's training log
    assert main(["--checkpoint", str(run), "--inner-steps", "0,2,4", "--batches", "2", "--elbo-draws", "8",
                 "--iwae-samples", "8", "--out", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "upper bound" in printed and "published LTM protocol" in printed and "prefix-predictive" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert report["checkpoint"].endswith("step_000006") and report["exact"] is False
    assert set(report["labels"]) == set(PROTOCOLS)
    rows = report["results"]
    assert [r["inner_steps"] for r in rows] == [0, 2, 4]
    assert rows[0]["fresh_noise_elbo"] == pytest.approx(_hand_k0_bound(run, draws=8))
    for r in rows:
        e, w, p = r["fresh_noise_elbo"], r["importance_weighted"], r["prefix_predictive"]
        assert all(r[k]["label"] == PROTOCOLS[k] for k in PROTOCOLS)
        assert e["tokens"] == w["tokens"] == 2 * 8 * 32 and w["num_samples"] == 8
        assert p["prefix_len"] == 16 and p["tokens"] == 2 * 8 * (33 - 16)
        assert "not a bound" in r["published_protocol"]["label"]
    mean = {k: sum(r[k][f] for r in rows) / len(rows)
            for k, f in (("fresh_noise_elbo", "neg_elbo"), ("importance_weighted", "nll_bound"))}
    assert mean["importance_weighted"] <= mean["fresh_noise_elbo"]  # IWAE is the tighter bound


def _hand_k0_bound(run, draws: int, batches: int = 2, seed: int = 0) -> dict:
    """The K=0 fresh-noise bound written out: q is its start N(0, I) = the prior, so the KL is 0 and the
    reconstruction is the cross-entropy averaged over the same noise draws (seeded with --seed)."""
    from ltm.data import prepare_data
    from ltm.training.checkpoint import load_checkpoint

    model, _, config = load_checkpoint(run)
    data = prepare_data(config.data, config.data_cache_dir())
    shape = tuple(model.prior.event_shape)
    torch.manual_seed(seed)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b in data.val.fixed_batches(config.batch_size, batches):  # (B, T+1)
            for _ in range(draws):
                z = torch.distributions.Normal(torch.zeros(b.shape[0], *shape), 1.0).rsample()  # (B, N, D)
                logits = model.decoder(b[:, :-1], latents=z)  # (B, T, V)
                total += F.cross_entropy(logits.transpose(1, 2), b[:, 1:], reduction="sum").item() / draws
            tokens += b[:, 1:].numel()
    recon = total / tokens
    return {"label": PROTOCOLS["fresh_noise_elbo"], "inner_steps": 0, "num_draws": draws,
            "reconstruction": recon, "kl": 0.0, "tokens": tokens, "sequences": batches * config.batch_size,
            "neg_elbo": recon, "perplexity_bound": math.exp(recon)}


def test_data_file_and_bad_budgets(capsys, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    corpus, _ = shared_paths(tmp_path_factory)
    assert main(["--checkpoint", str(run), "--data", str(corpus), "--inner-steps", "1",
                 "--batches", "1", "--iwae-samples", "2"]) == 0
    assert str(corpus) in capsys.readouterr().out
    assert main(["--checkpoint", str(run), "--inner-steps", "a,b"]) == 2
    assert capsys.readouterr().err.startswith("error: --inner-steps must be a comma list")


def test_vanilla_prefix_predictive_is_its_perplexity(capsys, tmp_path, tmp_path_factory):
    from ltm.training.checkpoint import load_checkpoint

    run, out = vanilla_run(tmp_path_factory), tmp_path / "eval.json"
    assert main(["--checkpoint", str(run), "--inner-steps", "0,3", "--batches", "2", "--prefix-len", "10",
                 "--out", str(out)]) == 0
    assert "exact NLL" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["exact"] is True
    model, _, config = load_checkpoint(run)
    from ltm.data import prepare_data

    data = prepare_data(config.data, config.data_cache_dir())
    with torch.no_grad():
        nll = [F.cross_entropy(model.decoder(b[:, :-1])[:, 9:].transpose(1, 2), b[:, 10:], reduction="sum")
               for b in data.val.fixed_batches(config.batch_size, 2)]
    ordinary = (sum(nll) / (2 * 8 * (33 - 10))).item()
    exact = report["exact_nll"]
    assert report["results"] == []  # one heading, no budget K
    assert exact["continuation"]["nll"] == pytest.approx(ordinary, rel=1e-5)
    with torch.no_grad():
        full = [F.cross_entropy(model.decoder(b[:, :-1]).transpose(1, 2), b[:, 1:], reduction="sum")
                for b in data.val.fixed_batches(config.batch_size, 2)]
    assert exact["nll"] == pytest.approx((sum(full) / (2 * 8 * 32)).item(), rel=1e-5)


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", ["missing", "empty", "csv-as-jsonl", "csv-as-lambada", "prefix", "samples",
                                  "limit"])
def test_bad_inputs_one_clear_sentence(case, capsys, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    csv = "text,label\nthe cat sat,1\n"
    args, want = {
        "missing": (["--data", str(tmp_path / "nope.txt")], "does not exist"),
        "empty": (["--data", _write(tmp_path / "empty.txt", "")], "is empty"),
        "csv-as-jsonl": (["--data", _write(tmp_path / "d.jsonl", csv)], "valid json"),
        "csv-as-lambada": (["--lambada", _write(tmp_path / "l.jsonl", csv), "--batches", "0"],
                           "is not JSON lines"),
        "prefix": (["--prefix-len", "33"], "--prefix-len 33 leaves no continuation"),
        "samples": (["--iwae-samples", "0"], "--iwae-samples S must be >= 1"),
        "limit": (["--limit", "0", "--ptb", "x.txt"], "--limit must be >= 1"),
    }[case]
    capsys.readouterr()
    assert main(["--checkpoint", str(run), "--inner-steps", "1", "--batches", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and want in err and err.count("\n") == 1


def test_held_out_q_may_be_fitted_with_other_inner_loop_settings(capsys, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    reports = []
    for extra in ([], ["--fast-optimizer", "sgd", "--fast-lr", "0.05"]):
        out = tmp_path / f"eval{len(extra)}.json"
        assert main(["--checkpoint", str(run), "--inner-steps", "0,2", "--batches", "1",
                     "--iwae-samples", "1", "--out", str(out), *extra]) == 0
        reports.append(json.loads(out.read_text()))
    own, other = reports
    assert other["inner_loop"]["optimizer"] == "sgd" and other["inner_loop"]["lr"] == 0.05
    assert own["inner_loop"]["optimizer"] != "sgd"
    at = [[r["results"][i]["fresh_noise_elbo"]["neg_elbo"] for r in reports] for i in (0, 1)]
    assert at[0][0] == pytest.approx(at[0][1])  # K=0: no fit, the same q
    assert at[1][0] != pytest.approx(at[1][1])  # K=2: another fit, another bound
    assert main(["--checkpoint", str(run), "--fast-lr", "-1"]) == 2
    assert "--fast-lr must be a finite number > 0, got -1.0" in capsys.readouterr().err


def test_protocols_picks_columns_and_long_fit_needs_the_elbo(capsys, tmp_path, tmp_path_factory):
    run, out = shared_run(tmp_path_factory), tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["--checkpoint", str(run), "--inner-steps", "0,1", "--batches", "1", "--iwae-samples", "2",
                 "--protocols", "prefix,elbo", "--long-fit", "2", "--out", str(out)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("K "))
    assert header.split() == ["K", "recon", "KL", "-ELBO", "ppl", "<=", "prefix", "ppl"]
    report = json.loads(out.read_text())
    assert report["protocols"] == ["elbo", "prefix"] and "long_fit" in report
    assert set(report["labels"]) == {"fresh_noise_elbo", "prefix_predictive"}
    assert all(set(r) >= {"fresh_noise_elbo", "prefix_predictive", "gap_to_long_fit"} and
               "importance_weighted" not in r for r in report["results"])
    assert main(["--checkpoint", str(run), "--protocols", "prefix", "--long-fit", "2"]) == 2
    assert "--long-fit reports each K's gap in the fresh-noise ELBO" in capsys.readouterr().err
