"""`--prior flow` and `--guide flow` through train, resume, sample and evaluate; their parameters
saved and loaded exactly; bad flow options answered with one sentence."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ltm.cli.train_args import build_parser, given_values
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from ltm.training.checkpoint import load_checkpoint, load_guide
from ltm.training.config import TrainConfig
from ltm.training.trainer import Trainer
from tests.cli_helpers import one_thread, run_everything, shared_paths, tiny_flags  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

PRIOR_FLAGS = ["--prior", "flow", "--prior-kwargs", '{"kind": "spline_coupling", "num_flows": 1}']
GUIDE_FLAGS = ["--guide", "flow", "--guide-kwargs", '{"flow_params": "per_sequence", "over": "block"}']


@pytest.mark.parametrize("flags", [PRIOR_FLAGS, GUIDE_FLAGS], ids=["prior", "guide"])
def test_train_resume_sample_evaluate(flags, tmp_path, tmp_path_factory, capsys):
    report = run_everything(flags, tmp_path, tmp_path_factory, capsys)
    weights = load_file(report["run"] / "step_000004/model.safetensors")
    assert any(k.startswith("prior.flows." if flags is PRIOR_FLAGS else "guide.flows.") for k in weights)
    assert report["exact"] is False and all("importance_weighted" in r for r in report["results"])
    assert sample_main(["--checkpoint", str(report["run"]), "--unconditional", "--num-samples", "2",
                        "--max-new-tokens", "5", "--seed", "1"]) == 0


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
