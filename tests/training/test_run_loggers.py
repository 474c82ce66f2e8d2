"""`--log-to`: TensorBoard event files (and a wandb run) that hold the loss curve of
`metrics.jsonl`, the configuration, the ltm version and the git commit; a resumed run purges the
curve's steps after its checkpoint; a missing package is one sentence before anything is written."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from ltm.core.errors import ConfigError
from ltm.training.config import TrainConfig
from ltm.training.trainer import Trainer
from tests.cli_helpers import one_thread, shared_paths  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cfg(tmp_path_factory, tmp_path):
    corpus, cache = shared_paths(tmp_path_factory)

    def make(**overrides) -> TrainConfig:
        base = dict(dataset=str(corpus), cache_dir=str(cache), out_dir=str(tmp_path / "run"), vocab_size=300,
                    block_size=16, d_model=16, n_layer=1, n_head=2, batch_size=4, model="vanilla",
                    max_steps=6, warmup_steps=1, lr_decay_steps=6, eval_every=3, eval_batches=1,
                    save_every=3, keep_last=0, progress=False, precision="fp32")
        return TrainConfig.from_dict({**base, **overrides})

    return make


def _jsonl(run, split="train", key="loss") -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if r["split"] == split}


def _events(run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"),
                                             size_guidance={event_accumulator.TENSORS: 0,
                                                            event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def _text(acc, tag: str) -> str:
    return acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode()


def test_tensorboard_holds_the_loss_curve_and_the_config(cfg, tmp_path):
    pytest.importorskip("tensorboard")
    Trainer(cfg(log_to="tensorboard")).train()
    run = tmp_path / "run"
    acc = _events(run)
    curve = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert curve == pytest.approx(_jsonl(run), rel=1e-6) and sorted(curve) == list(range(1, 7))
    val = {e.step: e.value for e in acc.Scalars("val/neg_elbo")}
    assert val == pytest.approx(_jsonl(run, "val", "neg_elbo"), rel=1e-6) and sorted(val) == [3, 6]
    config = _text(acc, "config/text_summary")
    assert "model: vanilla" in config and "max_steps: 6" in config and "log_to: tensorboard" in config
    assert "git_commit:" in _text(acc, "run/text_summary")


def test_a_resumed_run_purges_the_steps_after_its_checkpoint(cfg, tmp_path):
    pytest.importorskip("tensorboard")
    Trainer(cfg(log_to="tensorboard", save_every=0, max_steps=3)).train()  # saves step 3 only
    Trainer(cfg(log_to="tensorboard", resume="auto")).train()
    run = tmp_path / "run"
    steps = [e.step for e in _events(run).Scalars("train/loss")]
    assert sorted(steps) == list(range(1, 7)) and len(steps) == 6


def test_wandb_offline_run_holds_the_curve(cfg, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []
    real_init = wandb.init

    def spy_init(**kwargs):
        run = real_init(**kwargs)
        log = run.log
        run.log = lambda data, step: (logged.append((step, data)), log(data, step=step))
        return run

    with mock.patch.object(wandb, "init", spy_init):
        Trainer(cfg(log_to="wandb", max_steps=3, eval_every=0, save_every=0)).train()
    run = tmp_path / "run"
    assert {s: d["train/loss"] for s, d in logged if "train/loss" in d} == pytest.approx(_jsonl(run))
    assert list((run / "wandb").glob("offline-run-*")), "no offline wandb run written"


def test_a_logger_whose_package_is_missing_is_one_sentence(cfg, tmp_path):
    with mock.patch("importlib.util.find_spec", return_value=None):
        with pytest.raises(ConfigError, match=r"--log-to wandb needs the wandb package.*pip install"):
            cfg(log_to="wandb")
    with pytest.raises(ConfigError, match="--log-to 'mlflow' is not a logger ltm knows"):
        cfg(log_to="mlflow")
    assert not (tmp_path / "run").exists()
