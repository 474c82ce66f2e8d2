"""Controls in `ltm.compare`: sized within their tolerances, the fixed-latent control trains with
KL 0, seeds change only the seed, and controls that cannot be made are one sentence before any
training."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from ltm.compare import main
from ltm.core.errors import ConfigError
from ltm.eval import controls
from ltm.eval.comparison import parse_comparison
from ltm.eval.controls import control_values, decode_flops_per_token, with_values
from ltm.eval.flops import step_cost
from ltm.training.build import build_model
from ltm.training.config import TrainConfig
from tests.cli_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 300
TINY = dict(vocab_size=VOCAB, block_size=32, d_model=32, n_layer=2, n_head=2, batch_size=4, max_steps=5,
            window=4)


def config(**values) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **values})


def params(cfg: TrainConfig) -> int:
    return sum(p.numel() for p in build_model(cfg, VOCAB).parameters())


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, VOCAB, (4, 33), generator=torch.Generator().manual_seed(0))  # (B, T+1)


LTM = dict(model="ltm", inner_steps=2, ltm={"n_latent": 2, "d_latent": 16})


def test_the_params_control_is_within_2_percent(batch):
    run = config(**LTM)
    sized = control_values("params", run, VOCAB, batch)
    control = with_values(run, sized.values)
    assert control.model == "vanilla" and control.window == run.window
    assert abs(params(control) / params(run) - 1) <= 0.02
    assert sized.achieved == params(control) and sized.target == params(run)


def test_the_flops_control_is_within_10_percent_at_the_same_tokens(batch):
    run = config(**{**LTM, "inner_steps": 4})
    sized = control_values("flops", run, VOCAB, batch)
    control = with_values(run, sized.values)
    mine, theirs = (step_cost(c, VOCAB, batch)["training_flops"] for c in (run, control))
    assert abs(theirs / mine - 1) <= 0.10
    assert control.max_steps == run.max_steps and control.batch_size == run.batch_size
    assert control.d_model > run.d_model or control.n_layer > run.n_layer  # the inner loop costs


def test_the_inference_flops_control_of_a_token_level_family(batch):
    run = config(model="ponderlm2", ponderlm2={"thoughts": 2})
    sized = control_values("inference_flops", run, VOCAB, batch)
    control = with_values(run, sized.values)
    mine, theirs = (decode_flops_per_token(c, VOCAB, batch) for c in (run, control))
    assert abs(theirs / mine - 1) <= 0.10


def test_the_fixed_latent_control_trains_with_kl_zero(batch, tmp_path):
    from ltm.inference import DualRateOptimizer
    from ltm.training.build import build_run_guide

    run = config(**LTM)
    control = with_values(run, control_values("fixed_latent", run, VOCAB, batch).values)
    assert (control.prior, control.guide, control.model) == ("delta", "prior", "ltm")
    model = build_model(control, VOCAB)
    opt = DualRateOptimizer(model, build_run_guide(control, model), control.inner_config(),
                            control.slow_config())
    results = [opt.step(batch) for _ in range(3)]
    assert all(r.kl == 0.0 for r in results)
    assert results[-1].reconstruction < results[0].reconstruction  # it trains
    assert params(control) - params(run) == 2 * 16  # the same architecture, plus a learned point z


def test_a_control_that_cannot_be_sized_names_the_closest(batch, monkeypatch):
    monkeypatch.setattr(controls, "PARAMS_TOLERANCE", 1e-9)
    with pytest.raises(ConfigError, match=r"run 'x': no vanilla width within 0% of its [\d,]+ "
                                          r"parameters that 2 heads allow; the closest is d_model \d+"):
        control_values("params", config(**LTM), VOCAB, batch, run="x")


def comparison(tmp_path, **top) -> dict:
    return {"name": "c", "out_dir": str(tmp_path / "out"), "common": dict(TINY, dataset="embedded"),
            "eval": {"inner_steps": [0, 2], "batches": 1, "iwae_samples": 1, "protocol_steps": 2},
            "runs": [{"name": "ltm", **LTM}], **top}


@pytest.mark.parametrize("top, message", [
    ({"seeds": 0}, re.escape("seeds in t.yaml must be a whole number >= 1 (runs per seed), got 0.")),
    ({"controls": ["fixed_latent"], "runs": [{"name": "p2", "model": "ponderlm2"}]},
     "run 'p2': a fixed_latent control fixes a sequence-level latent, and family ponderlm2 has none"),
    ({"controls": ["params_matched"]}, "run 'ltm': unknown control 'params_matched'; choose from"),
    ({"controls": ["inference_flops"]}, "inference_flops matches the forward cost per token of a "
                                        "token-level family; family ltm"),
])
def test_bad_controls_and_seeds_are_one_sentence(top, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        parse_comparison(comparison(tmp_path, **top), "t.yaml")


def test_seeds_change_only_the_seed(tmp_path):
    comp = parse_comparison(comparison(tmp_path, seeds=3), "t.yaml")
    first, *others = [i for i in comp.instances() if i.run.name == "ltm"]
    assert [i.seed for i in (first, *others)] == [0, 1, 2]
    for other in others:
        a, b = first.config.to_dict(), other.config.to_dict()
        assert {k for k in a if a[k] != b[k]} == {"seed", "out_dir"}
        assert other.dir == tmp_path / "out" / "ltm" / f"seed_{other.seed}"


def test_quick_runs_a_comparison_with_its_controls_and_seeds(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    data = comparison(tmp_path, seeds=3, controls=["baseline", "params", "flops", "fixed_latent"])
    data["common"].update(d_model=64, max_documents=20)
    path.write_text(yaml.safe_dump(data))
    assert main(["--config", str(path), "--quick"]) == 0
    out = tmp_path / "out-quick"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert sorted(summary["runs"]) == ["ltm", "ltm.baseline", "ltm.fixed_latent", "ltm.flops", "ltm.params"]
    assert all(len(r["values"]["4"]) == 2 for r in summary["runs"].values())
    assert set(summary["differences"]["ltm"]) == {"baseline", "params", "flops", "fixed_latent"}
    results = (out / "results.md").read_text()
    assert "ltm beats" in results and "Target (0.03 nats/token below each of" in results
    fixed = summary["runs"]["ltm.fixed_latent"]["values"]
    assert fixed["0"] == fixed["4"]  # nothing to infer: K changes nothing


def test_the_trend_reads_each_comparisons_summary(tmp_path, capsys):
    def summary(folder, params, gap):
        folder.mkdir()
        diff = {"mean": gap, "se": 0.01, "n": [3, 3], "beyond_2se": abs(gap) > 0.02}
        (folder / "summary.json").write_text(json.dumps({
            "name": folder.name, "seeds": [0, 1, 2], "protocol_steps": 16,
            "runs": {"ltm": {"params": params, "d_model": params // 1000, "n_layer": 2}},
            "differences": {"ltm": {"params": {"16": diff}}}}))
        return folder
    folders = [summary(tmp_path / "big", 4_000_000, -0.01), summary(tmp_path / "small", 1_000_000, 0.05)]
    out = tmp_path / "trend"
    assert main(["--trend", *map(str, folders), "--run", "ltm", "--out-dir", str(out)]) == 0
    text = (out / "trend.md").read_text()
    assert text.index("| small |") < text.index("| big |")  # ordered by size
    assert "+0.0500 ± 0.0100 *" in text
    assert ("the gap shrinks from +0.0500 to -0.0100 (-0.0600; in the run's favour at the largest "
            "size)") in text
    assert main(["--trend", str(folders[0]), "--run", "nope", "--out-dir", str(out)]) == 2
    assert "has no run 'nope'" in capsys.readouterr().err


def test_a_control_serving_two_roles_reports_each_roles_match(tmp_path):
    """One vanilla can be a run's inference-FLOP match and its training-FLOP match at once; the
    report states each role's own measure."""
    comp = parse_comparison(comparison(tmp_path), "t.yaml")
    run = comp.runs[0]
    values = {"model": "vanilla", "d_model": 48}
    training = controls.Sized(values, "training FLOPs", 1.0e9, 1.02e9)
    decoding = controls.Sized(values, "FLOPs per generated token", 2.0e6, 1.9e6)
    first = comp.add_control(run, "flops", training)
    assert comp.add_control(run, "inference_flops", decoding) is first
    assert first.sizing_for(run.name, "flops").describe().endswith("training FLOPs against 1e+09 (+2.0 %)")
    assert "per generated token" in first.sizing_for(run.name, "inference_flops").describe()
