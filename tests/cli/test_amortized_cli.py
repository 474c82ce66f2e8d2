"""Amortised and semi-amortised guides and the VampPrior from the command line: train, resume,
sample and evaluate, as any other guide and prior."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ltm.train import main as train_main
from ltm.training.checkpoint import load_checkpoint, load_guide
from tests.cli_helpers import one_thread, run_everything, shared_paths, tiny_flags, train_losses  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("flags, guide, prior", [
    (["--guide", "semi_amortized", "--inner-steps", "4"], "SemiAmortizedGuide", "StandardNormal"),
    (["--guide", "amortized", "--inner-steps", "0"], "AmortizedGuide", "StandardNormal"),
    (["--prior", "vamp", "--guide", "amortized", "--inner-steps", "0",
      "--prior-kwargs", '{"num_pseudo": 4, "pseudo_len": 6, "pseudo_dim": 16}',
      "--guide-kwargs", '{"encoder_dim": 16}'], "AmortizedGuide", "VampPrior"),
])
def test_amortised_guides_end_to_end(flags, guide, prior, tmp_path, tmp_path_factory, capsys):
    report = run_everything(flags, tmp_path, tmp_path_factory, capsys)
    model = load_checkpoint(report["run"])[0]
    loaded = load_guide(report["run"], model=model)
    assert (type(loaded).__name__, type(model.prior).__name__) == (guide, prior)
    assert report["exact"] is False
    saved = load_file(report["run"] / "step_000004" / "model.safetensors")
    assert all(torch.equal(saved[f"guide.{k}"], v) for k, v in loaded.state_dict().items())
    if prior == "VampPrior":  # its pseudo-inputs saved with the model, bound to the loaded encoder
        assert torch.equal(saved["prior.pseudo_inputs"], model.prior.pseudo_inputs)
        assert model.prior.encoder[0] is loaded.encoder


def test_unrolled_semi_amortised_trains_from_the_cli(tmp_path, tmp_path_factory):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "unrolled"
    flags = [*tiny_flags(corpus, cache, run, max_steps=2, eval_every=2, lr_decay_steps=2),
             "--guide", "semi_amortized", "--guide-kwargs", '{"unroll": true}', "--inner-steps", "2"]
    assert train_main([*flags, "--fast-optimizer", "sgd"]) == 0
    assert [s for s, _ in train_losses(run)] == [1, 2]
    err_run = tmp_path / "adam"
    assert train_main([*tiny_flags(corpus, cache, err_run, max_steps=2), "--guide", "semi_amortized",
                       "--guide-kwargs", '{"unroll": true}']) != 0
    assert not (err_run / "latest").exists()
