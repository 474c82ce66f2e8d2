"""The training loop: exact resume, weights-only init, validation that leaves the RNG alone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ltm.core.errors import CheckpointError, ConfigError
from ltm.inference.bound_results import PrefixPredictive
from ltm.training.config import TrainConfig
from ltm.training.trainer import Trainer
from tests.cli_helpers import one_thread, shared_paths, train_losses  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cfg(tmp_path_factory, tmp_path):
    corpus, cache = shared_paths(tmp_path_factory)

    def make(**overrides) -> TrainConfig:
        base = dict(dataset=str(corpus), cache_dir=str(cache), out_dir=str(tmp_path / "run"), vocab_size=300,
                    block_size=32, d_model=32, n_layer=2, n_head=2, inner_steps=2, batch_size=8,
                    max_steps=6, warmup_steps=2, lr=3e-3, lr_decay_steps=6, eval_every=2, eval_batches=1,
                    save_every=3, keep_last=0, progress=False,
                    ltm={"n_latent": 2, "d_latent": 8})
        return TrainConfig.from_dict({**base, **overrides})

    return make


def test_resume_continues_exactly(cfg, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(cfg(out_dir=str(straight))).train()
    Trainer(cfg(out_dir=str(split), max_steps=3)).train()
    resumed = Trainer(cfg(out_dir=str(split), resume="auto"))
    assert resumed.step == 3
    resumed.train()
    a, b = train_losses(straight), train_losses(split)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6
    wa = load_file(straight / "step_000006/model.safetensors")
    wb = load_file(split / "step_000006/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_validation_leaves_training_rng_alone(cfg):
    trainer = Trainer(cfg())
    state = torch.get_rng_state()
    first, second = trainer.validate(), trainer.validate()
    assert torch.equal(state, torch.get_rng_state())
    assert first == second


def test_validation_bound_equals_its_hand_computation(cfg):
    """A local Gaussian left at its start (K=0) is q = p: the KL is 0 and the bound is the
    cross-entropy at a prior draw, reproducible from the validation seed."""
    trainer = Trainer(cfg(eval_inner_steps=0, precision="fp32"))  # an exact comparison: fp32
    bound = trainer.validate()
    (batch,) = trainer.val_batches  # (B, T+1)
    model = trainer.model.eval()
    N, D = model.prior.event_shape
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(trainer.cfg.seed + trainer.step)
        z = torch.distributions.Normal(torch.zeros(batch.shape[0], N, D), 1.0).rsample()  # (B, N, D)
        logits = model.decoder(batch[:, :-1], latents=z)  # (B, T, V)
        nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="sum")
    n_tokens = batch[:, 1:].numel()
    assert bound.reconstruction == pytest.approx(nll.item() / n_tokens, rel=1e-5)
    assert bound.kl == pytest.approx(0.0, abs=1e-6)
    assert bound.tokens == n_tokens and bound.inner_steps == 0


def test_a_map_guide_is_validated_prefix_predictively(cfg):
    """A MAP point has no density, so no ELBO: validation reports the prefix-predictive NLL. Left at
    its start (K=0) the point is z = 0, so the number is computable without noise."""
    trainer = Trainer(cfg(guide="delta", eval_inner_steps=0, precision="fp32"))  # exact: fp32
    trainer.train()
    score = trainer.validate()
    assert isinstance(score, PrefixPredictive)
    (batch,) = trainer.val_batches  # (B, T+1)
    model = trainer.model.eval()
    N, D = model.prior.event_shape
    P = batch.shape[1] // 2
    with torch.no_grad():
        logits = model.decoder(batch[:, :-1], latents=torch.zeros(batch.shape[0], N, D))  # (B, T, V)
        nll = F.cross_entropy(logits[:, P - 1:].transpose(1, 2), batch[:, P:], reduction="sum")
    n_tokens = batch[:, P:].numel()
    assert score.nll == pytest.approx(nll.item() / n_tokens, rel=1e-5)
    assert score.tokens == n_tokens and score.inner_steps == 0 and score.prefix_len == P
    records = [json.loads(line) for line in (trainer.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("perplexity_bound" not in r and "neg_elbo" not in r for r in records)
    assert {r["protocol"] for r in records if r["split"] == "val"} == {"prefix_predictive"}


def test_metrics_and_checkpoints(cfg, tmp_path):
    import json

    Trainer(cfg()).train()
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert len(train) == 6
    assert {"loss", "reconstruction", "kl", "perplexity_bound", "tokens_per_s"} <= set(train[0])
    assert [r["step"] for r in val] == [2, 4, 6]
    assert sorted(p.name for p in (tmp_path / "run").glob("step_*")) == ["step_000003", "step_000006"]


def test_init_from_loads_weights_only(cfg, tmp_path):
    Trainer(cfg(out_dir=str(tmp_path / "a"), max_steps=2)).train()
    trainer = Trainer(cfg(out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "a")))
    saved = load_file(tmp_path / "a/step_000002/model.safetensors")
    assert trainer.step == 0 and not trainer.opt.optimizer.state
    assert all(torch.equal(v, saved[k]) for k, v in trainer.model.state_dict().items())
    with pytest.raises(CheckpointError, match="has shape"):
        Trainer(cfg(out_dir=str(tmp_path / "c"), init_from=str(tmp_path / "a"), d_model=64))


def test_existing_run_is_never_clobbered(cfg, tmp_path):
    Trainer(cfg(max_steps=3)).train()
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    Trainer(cfg(max_steps=2, overwrite=True)).train()
    assert sorted(p.name for p in (tmp_path / "run").glob("step_*")) == ["step_000002"]
