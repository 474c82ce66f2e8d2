"""TrainConfig: one dataclass, plus a section per family, behind the flags, config files and config.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ltm.cli.train_args import build_parser, given_values
from ltm.core.errors import ConfigError
from ltm.families import FAMILIES
from ltm.models import LTMOptions
from ltm.ponder.ponderlm2 import PonderLM2Options
from ltm.train import main
from ltm.training.config import COMPONENTS, TrainConfig, load_config_file

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _config(argv: list[str]) -> TrainConfig:
    return TrainConfig.from_dict(given_values(build_parser("x", argv).parse_args(argv)))


def test_every_field_and_family_option_is_a_flag_with_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        if f.name in COMPONENTS:  # a section: one flag per option of its dataclass
            for option in dataclasses.fields(COMPONENTS[f.name]):
                assert f"--{f.name}.{option.name.replace('_', '-')}" in help_text
        elif f.name != "sections":
            assert "--" + f.name.replace("_", "-") in help_text
            assert f.metadata["help"]
    for name, family in FAMILIES.items():
        for f in dataclasses.fields(family.Options):
            assert f"--{name.replace('_', '-')}.{f.name.replace('_', '-')}" in help_text
    assert "Thoughts K per token ((K+1)x decode FLOPs)" in help_text  # from the Options docstring


def test_flags_override_the_file_option_by_option(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("inner_steps: 7\nlr: 3e-4\nwindow: 8\nprior_kwargs: {num_components: 3}\n"
                    "ponderlm2: {thoughts: 3, jacobi_sweeps: 5}\n")
    cfg = _config(["--config", str(path), "--inner-steps", "2", "--no-progress", "--window", "none",
                   "--guide-kwargs", '{"init_scale": 0.5}', "--ponderlm2.thoughts", "2"])
    assert (cfg.inner.steps, cfg.slow.lr, cfg.window, cfg.progress) == (2, 3e-4, None, False)
    assert cfg.prior_kwargs == {"num_components": 3} and cfg.guide_kwargs == {"init_scale": 0.5}
    assert cfg.sections["ponderlm2"] == PonderLM2Options(thoughts=2, jacobi_sweeps=5)


def test_a_family_reads_only_its_own_section():
    cfg = _config(["--model", "pause", "--pause.pauses", "3", "--ponderlm2.thoughts", "4"])
    assert cfg.options.pauses == 3 and cfg.family.name == "pause"
    assert cfg.sections["ponderlm2"].thoughts == 4  # kept (and saved), but not used by pause


def test_unknown_key_suggests_the_close_match(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("inner_step: 3\n")
    message = rf"unknown key 'inner_step' in {path}; did you mean 'inner_steps'\?"
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)
    path.write_text("ponderlm2: {thougts: 3}\n")
    with pytest.raises(ConfigError, match=r"'ponderlm2.thougts' .*did you mean 'ponderlm2.thoughts'"):
        load_config_file(path)
    with pytest.raises(ConfigError, match=r"unknown key 'pondrlm2'.*did you mean 'ponderlm2'"):
        TrainConfig.from_dict({"pondrlm2": {"thoughts": 1}})


@pytest.mark.parametrize("text, message", [
    ("ponderlm2: 3\n", r"config section 'ponderlm2' in .*c.yaml must be a mapping of ponderlm2's options"),
    ("batch_size: [1]\n", r"bad value for 'batch_size' in .*c.yaml: expected an integer, got \[1\]"),
    ("ponderml2: {thoughts: 2}\n", r"unknown key 'ponderml2' in .*c.yaml; did you mean 'ponderlm2'\?"),
])
def test_malformed_sections_and_values_are_one_sentence(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


def test_an_empty_section_keeps_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: ponderlm2\nponderlm2:\n")
    assert TrainConfig.from_dict(load_config_file(path)).options == PonderLM2Options()


class FieldNamedFamily(FAMILIES["vanilla"]):
    name = "seed"


def test_a_family_named_like_a_field_is_refused():
    with pytest.raises(ConfigError, match="named 'seed', which is a config field"):
        TrainConfig(model=f"{__name__}:FieldNamedFamily")


def test_bad_value_names_the_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"batch_size": "many"}')
    with pytest.raises(ConfigError, match=r"bad value for 'batch_size' in .*bad.json: expected an integer"):
        load_config_file(path)
    path.write_text('{"adaptive_cot": {"halt_lambda": "high"}}')
    with pytest.raises(ConfigError, match=r"bad value for 'adaptive_cot.halt_lambda' .*expected a number"):
        load_config_file(path)


def test_an_alias_is_its_option_in_files_flags_and_old_checkpoints(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("inner_steps: 7\nlr: 0.01\nblock_size: 48\ndata_seed: 3\n")
    cfg = TrainConfig.from_dict(load_config_file(path))
    assert (cfg.inner.steps, cfg.slow.lr, cfg.data.block_size, cfg.data.seed) == (7, 0.01, 48, 3)
    assert cfg.inner.lr == 0.3  # the run's default for the options not given
    nested = TrainConfig.from_dict({"inner": {"steps": 7}, "slow": {"lr": 0.01},
                                    "data": {"block_size": 48, "seed": 3}})
    assert nested == cfg
    args = build_parser("t").parse_args(["--inner-steps", "5", "--slow.lr", "0.02", "--block-size", "64"])
    flags = TrainConfig.from_dict(given_values(args))
    assert (flags.inner.steps, flags.slow.lr, flags.data.block_size) == (5, 0.02, 64)


def test_adding_an_inner_loop_option_touches_one_dataclass(monkeypatch, tmp_path):
    """A subclass of the inner loop's dataclass with one more field: it is a config key, a flag and a
    saved value, with nothing else edited."""
    from dataclasses import dataclass

    from ltm.inference import InnerLoopConfig
    from ltm.training import config as config_module

    @dataclass
    class WithMomentum(InnerLoopConfig):
        """The inner loop, and one more option.

        Attributes:
            momentum: SGD momentum of the fast steps.
        """

        momentum: float = 0.0

    monkeypatch.setitem(config_module.COMPONENTS, "inner", WithMomentum)
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  momentum: 0.9\n")
    assert TrainConfig.from_dict(load_config_file(path)).inner.momentum == 0.9
    parser = build_parser("t")
    assert "--inner.momentum" in parser.format_help() and "SGD momentum" in parser.format_help()
    cfg = TrainConfig.from_dict(given_values(parser.parse_args(["--inner.momentum", "0.5"])))
    assert isinstance(cfg.inner, WithMomentum) and cfg.inner.momentum == 0.5 and cfg.inner.steps == 4
    assert cfg.to_dict()["inner"]["momentum"] == 0.5
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # and back from config.json


def test_a_family_with_its_own_prior_refuses_another(capsys):
    assert main(["--model", "vanilla", "--prior", "mixture", "--print-config"]) == 2
    assert "error: model 'vanilla' has its own prior over its thoughts" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model 'ponderlm2_stochastic' has its own prior"):
        TrainConfig(model="ponderlm2_stochastic", prior_kwargs={"init_sigma": 0.2})


def test_converters():
    cfg = TrainConfig.from_dict(dict(
        d_model=64, n_head=4, inner_steps=3, fast_lr=0.2, fast_schedule="linear", reuse_noise=True,
        lr=1e-3, max_steps=50, lr_decay_steps=40, block_size=48, vocab_size=400, max_documents=10,
        ltm={"n_latent": 4, "d_latent": 16}))
    assert cfg.options == LTMOptions(n_latent=4, d_latent=16)
    dec = cfg.decoder_config(vocab_size=123)
    assert (dec.vocab_size, dec.d_model, dec.n_latent, dec.block_size) == (123, 64, 0, 48)
    inner = cfg.inner_config()
    assert (inner.steps, inner.lr, inner.schedule, inner.reuse_noise) == (3, 0.2, "linear", True)
    assert cfg.inner_config(9).steps == 9
    slow = cfg.slow_config()
    assert (slow.lr, slow.decay_steps, slow.beta1, slow.beta2) == (1e-3, 40, 0.9, 0.95)
    assert TrainConfig.from_dict({"max_steps": 30}).slow_config().decay_steps == 30  # none: the run's
    data = cfg.data
    assert (data.block_size, data.vocab_size, data.max_documents, data.dataset) == (48, 400, 10, "embedded")


def test_config_json_roundtrip():
    cfg = TrainConfig.from_dict({"prior": "mixture", "prior_kwargs": {"num_components": 2}, "window": None,
                                 "adaptive_cot": {"max_steps": 2}})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_default_yaml_is_everything_print_config_writes(capsys):
    text = (REPO / "configs" / "default.yaml").read_text()
    assert text == TrainConfig().to_yaml()
    assert main(["--print-config"]) == 0
    assert capsys.readouterr().out == text


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses(path):
    cfg = TrainConfig.from_dict(load_config_file(path))
    cfg.decoder_config(vocab_size=cfg.data.vocab_size)
    cfg.inner_config(), cfg.slow_config()
