"""`--prior flow` and `--guide flow` through train, resume, sample and evaluate; their parameters
saved and loaded exactly; bad flow options answered with one sentence."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ltm.cli.train_args import build_parser, given_values
from ltm.evaluate import main as evaluate_main
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from ltm.training.checkpoint import load_checkpoint, load_guide
from ltm.training.config import TrainConfig
from ltm.training.trainer import Trainer
from tests.cli_helpers import one_thread, shared_paths, tiny_flags, train_losses  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

PRIOR_FLAGS = ["--prior", "flow", "--prior-kwargs", '{"kind": "spline_coupling", "num_flows": 1}']
GUIDE_FLAGS = ["--guide", "flow", "--guide-kwargs", '{"flow_params": "per_sequence", "over": "block"}']


@pytest.mark.parametrize("flags", [PRIOR_FLAGS, GUIDE_FLAGS], ids=["prior", "guide"])
def test_train_resume_sample_evaluate(flags, tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    common = dict(max_steps=4, save_every=2, eval_every=2, lr_decay_steps=4)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main([*tiny_flags(corpus, cache, straight, **common), *flags]) == 0
    assert train_main([*tiny_flags(corpus, cache, split, **{**common, "max_steps": 2}), *flags]) == 0
    assert train_main(["--out-dir", str(split), "--resume", "auto", "--max-steps", "4", "--no-progress"]) == 0
    a, b = train_losses(straight), train_losses(split)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6  # resumed == straight
    wa, wb = (load_file(run / "step_000004/model.safetensors") for run in (straight, split))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.startswith("prior.flows." if flags is PRIOR_FLAGS else "guide.flows.") for k in wa)
    capsys.readouterr()
    prompt = ["--checkpoint", str(split), "--prompt", "the cat sat", "--max-new-tokens", "5", "--seed", "3"]
    assert sample_main(prompt) == 0
    first = capsys.readouterr().out
    assert "the cat sat" in first
    assert sample_main(prompt) == 0 and capsys.readouterr().out == first
    assert sample_main(["--checkpoint", str(split), "--unconditional", "--num-samples", "2",
                        "--max-new-tokens", "5", "--seed", "1"]) == 0
    out = tmp_path / "eval.json"
    assert evaluate_main(["--checkpoint", str(split), "--inner-steps", "0,2", "--batches", "1",
                          "--iwae-samples", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["exact"] is False and [r["inner_steps"] for r in report["results"]] == [0, 2]
    for r in report["results"]:
        assert all(math.isfinite(v) for k in ("fresh_noise_elbo", "importance_weighted", "prefix_predictive")
                   for v in r[k].values() if isinstance(v, float))


def test_checkpoint_round_trip_of_flow_prior_and_guide(tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    flags = [*tiny_flags(corpus, cache, run, max_steps=2, save_every=2, eval_every=2, lr_decay_steps=2),
             "--prior", "flow", "--guide", "flow", "--guide-kwargs", '{"kind": "spline_coupling"}']
    trainer = Trainer(TrainConfig.from_dict(given_values(build_parser("train", flags).parse_args(flags))),
                      log=lambda _: None)
    prior_start = {k: v.clone() for k, v in trainer.model.prior.state_dict().items()}
    guide_start = {k: v.clone() for k, v in trainer.guide.state_dict().items()}
    trainer.train()
    model, _, config = load_checkpoint(run)
    guide = load_guide(run, model=model)
    assert type(model.prior).__name__ == "FlowPrior" and type(guide).__name__ == "FlowGuide"
    assert config.guide_kwargs == {"kind": "spline_coupling"}
    for trained, loaded, start in ((trainer.model.prior, model.prior, prior_start),
                                   (trainer.guide, guide, guide_start)):
        ours, theirs = trained.state_dict(), loaded.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert any(not torch.equal(ours[k], start[k]) for k in ours if ours[k].is_floating_point())


@pytest.mark.parametrize("flags, message", [
    (["--prior", "flow", "--prior-kwargs", '{"kind": "planar"}'], "unknown flow kind 'planar'"),
    (["--guide", "flow", "--guide-kwargs", '{"num_flows": 0}'], "num_flows must be an integer >= 1"),
    (["--guide", "flow", "--guide-kwargs", '{"hidden_dims": [2]}'], "hidden_dims must be"),
])
def test_bad_flow_options_are_one_sentence(flags, message, tmp_path, tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    assert train_main([*tiny_flags(corpus, cache, tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
