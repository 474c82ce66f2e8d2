"""TrainConfig: one dataclass behind the flags, the config files and the saved config.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ltm.train import main
from ltm.train_config import ConfigError, TrainConfig, build_parser, given_values, load_config_file

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_every_field_is_a_flag_with_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text
        assert f.metadata["help"]
    for flag in ("--inner-steps", "--fast-lr", "--fast-schedule", "--prior-kwargs", "--reuse-noise",
                 "--accumulate-decoder-grads", "--resume", "--init-from", "--model"):
        assert flag in help_text


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("inner_steps: 7\nlr: 3e-4\nwindow: 8\nprior_kwargs: {num_components: 3}\n")
    args = build_parser("x").parse_args(["--config", str(path), "--inner-steps", "2", "--no-progress",
                                         "--window", "none", "--guide-kwargs", '{"init_scale": 0.5}'])
    cfg = TrainConfig(**given_values(args))
    assert (cfg.inner_steps, cfg.lr, cfg.window, cfg.progress) == (2, 3e-4, None, False)
    assert cfg.prior_kwargs == {"num_components": 3} and cfg.guide_kwargs == {"init_scale": 0.5}


def test_unknown_key_suggests_the_close_match(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("inner_step: 3\n")
    message = rf"unknown key 'inner_step' in {path}; did you mean 'inner_steps'\?"
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


def test_bad_value_names_the_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"batch_size": "many"}')
    with pytest.raises(ConfigError, match=r"bad value for 'batch_size' in .*bad.json: expected an integer"):
        load_config_file(path)


def test_converters():
    cfg = TrainConfig(d_model=64, n_head=4, n_latent=4, d_latent=16, inner_steps=3, fast_lr=0.2,
                      fast_schedule="linear", reuse_noise=True, lr=1e-3, max_steps=50, lr_decay_steps=40,
                      block_size=48, vocab_size=400, max_documents=10)
    dec = cfg.decoder_config(vocab_size=123)
    assert (dec.vocab_size, dec.d_model, dec.n_latent, dec.d_latent, dec.block_size) == (123, 64, 4, 16, 48)
    inner = cfg.inner_config()
    assert (inner.steps, inner.lr, inner.schedule, inner.reuse_noise) == (3, 0.2, "linear", True)
    assert cfg.inner_config(9).steps == 9
    slow = cfg.slow_config()
    assert (slow.lr, slow.max_steps, slow.betas) == (1e-3, 40, (0.9, 0.95))
    data = cfg.data_config()
    assert (data.block_size, data.vocab_size, data.max_documents, data.dataset) == (48, 400, 10, "embedded")


def test_config_json_roundtrip():
    cfg = TrainConfig(prior="mixture", prior_kwargs={"num_components": 2}, window=None)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_default_yaml_is_the_default():
    assert TrainConfig(**load_config_file(Path(CONFIGS[0]).parent / "default.yaml")) == TrainConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses(path):
    cfg = TrainConfig(**load_config_file(path))
    cfg.decoder_config(vocab_size=cfg.vocab_size)
    cfg.inner_config(), cfg.slow_config(), cfg.data_config()
