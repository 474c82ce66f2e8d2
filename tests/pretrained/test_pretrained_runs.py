"""Every family continues pretraining from a Hugging Face checkpoint: it trains, resumes, samples,
evaluates, and exports to a folder that reloads exactly (and, for vanilla, into `transformers`)."""

from __future__ import annotations

import json

import pytest
import torch

from ltm import evaluate, sample
from ltm.core.errors import ConfigError
from ltm.families import FAMILIES
from ltm.models import from_hf
from ltm.ponder.vanilla import VanillaDecoder
from ltm.training.checkpoint import load_checkpoint
from ltm.training.config import TrainConfig
from ltm.training.hf_export import export_hf
from ltm.training.trainer import Trainer
from tests.cli_helpers import one_thread, shared_paths  # noqa: F401 (fixture)
from tests.pretrained.conftest import ROWS, reference

pytestmark = pytest.mark.usefixtures("one_thread")
OPTIONS = {"ltm": {"n_latent": 2, "d_latent": 8}}  # the LTM's latents split over the 2 layers


@pytest.fixture
def hf_run(tmp_path_factory, tmp_path, hf_checkpoints):
    """A TrainConfig starting `model` from the tiny Llama (GQA, tied head)."""
    corpus, cache = shared_paths(tmp_path_factory)

    def make(model: str, kind: str = "llama_gqa_tied", **overrides) -> TrainConfig:
        base = dict(model=model, init_from_hf=str(hf_checkpoints[kind]), dataset=str(corpus),
                    cache_dir=str(cache), out_dir=str(tmp_path / model), block_size=32, inner_steps=2,
                    batch_size=4, max_steps=3, warmup_steps=1, lr=1e-3, eval_every=0, eval_batches=1,
                    save_every=3, keep_last=0, progress=False, precision="fp32", **OPTIONS)
        return TrainConfig.from_dict({**base, **overrides})

    return make


def _logits(model, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return model.full_logits(tokens, latents=z) if model.sequence_latent else model.full_logits(tokens)


# Coconut needs a tokenizer with its thought tokens, which a pretrained prose tokenizer lacks (it is
# refused in one sentence; tests/cli/test_cli_reasoning.py trains, resumes and scores it).
@pytest.mark.parametrize("family", [name for name in FAMILIES if not name.startswith("coconut")])
def test_train_resume_sample_evaluate_export(hf_run, tmp_path, family, capsys):
    run = tmp_path / family
    Trainer(hf_run(family)).train()
    saved = json.loads((run / "step_000003" / "config.json").read_text())  # as --resume auto reads it
    resumed = Trainer(TrainConfig.from_dict({**saved, "resume": "auto", "max_steps": 4, "save_every": 4}))
    assert resumed.step == 3
    resumed.train()
    assert sample.main(["--checkpoint", str(run), "--prompt", "the cat", "--max-new-tokens", "4",
                        "--inner-steps", "1"]) == 0
    assert evaluate.main(["--checkpoint", str(run), "--batches", "1", "--inner-steps", "1"]) == 0
    out = export_hf(run, tmp_path / "export")
    trained, _, config = load_checkpoint(run)
    as_checkpoint, _, _ = load_checkpoint(out)  # the folder is also an ltm checkpoint
    as_hf, _ = from_hf(out, FAMILIES[family])  # and a pretrained start
    assert as_hf.decoder.cfg == trained.decoder.cfg
    tokens = torch.randint(0, 297, (2, 20))
    z = torch.randn(2, 2, 8) if trained.sequence_latent else None
    expected = _logits(trained, tokens, z)
    assert torch.equal(_logits(as_checkpoint, tokens, z), expected)
    assert torch.equal(_logits(as_hf, tokens, z), expected)
    restored = dict(as_hf.state_dict())
    assert restored.keys() == trained.state_dict().keys()
    assert all(torch.equal(restored[k], v) for k, v in trained.state_dict().items())


@pytest.mark.parametrize("kind", ["llama_gqa_tied", "llama3_untied", "qwen2_bias"])
def test_vanilla_export_runs_in_transformers(hf_run, tmp_path, kind):
    """A trained vanilla decoder exports to a plain Llama or Qwen2 with ltm's logits."""
    run = tmp_path / "vanilla"
    Trainer(hf_run("vanilla", kind=kind)).train()
    out = export_hf(run, tmp_path / "export")
    model, _, _ = load_checkpoint(run)
    tokens = torch.randint(0, 297, (2, 30))
    with torch.no_grad():
        assert (reference(out)(tokens).logits - model.full_logits(tokens)).abs().max() <= 1e-4


def test_a_trained_ltm_starts_as_the_pretrained_model(hf_run, hf_checkpoints):
    trainer = Trainer(hf_run("ltm"))
    plain, _ = from_hf(hf_checkpoints["llama_gqa_tied"], VanillaDecoder, block_size=32)
    tokens = torch.randint(0, ROWS, (2, 32))
    z = 5 * torch.randn(2, 2, 8)
    assert (_logits(trainer.model, tokens, z) - _logits(plain, tokens, None)).abs().max() <= 1e-5


def test_freeze_decoder_trains_only_the_new_parts(hf_run):
    trainer = Trainer(hf_run("ltm", freeze="decoder", max_steps=2))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    fixed = trainer.model.pretrained_names()
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)
    moved = [k for k in after if ".cross." in k and not torch.equal(before[k], after[k])]
    assert moved  # the cross-attention learns
    with pytest.raises(ConfigError, match="nothing to train"):
        Trainer(hf_run("vanilla", freeze="decoder"))


def test_new_parameters_take_their_own_learning_rate(hf_run):
    """--slow.new-lr: the cross-attention and the prior at 5e-3, the pretrained decoder at --lr."""
    trainer = Trainer(hf_run("ltm", slow={"new_lr": 5e-3}))
    fixed = trainer.model.pretrained_names()
    initial = {id(p): g["initial_lr"] for g in trainer.opt.optimizer.param_groups for p in g["params"]}
    for name, p in trainer.model.named_parameters():
        assert initial[id(p)] == (1e-3 if name in fixed else 5e-3), name
    assert {n for n, _ in trainer.model.named_parameters()} - fixed  # some are new
