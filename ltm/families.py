"""Model families the CLI can build, by registry name (`--model ltm`) or `module:function` path.

A family is a function `(cfg: TrainConfig, vocab_size: int) -> nn.Module` returning a Pyro program
with `.model(tokens)` (the Pyro model), `.prior` and `.decoder`, which the dual-rate trainer,
the checkpoints and the sampler all accept. A later family registers one more function here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ltm.model import LatentThoughtModel
from ltm.ponder.builders import DETERMINISTIC_MODELS, PONDER_MODELS
from ltm.registry import resolve

if TYPE_CHECKING:
    from ltm.train_config import TrainConfig


def build_ltm(cfg: TrainConfig, vocab_size: int) -> LatentThoughtModel:
    """The Latent Thought Model: decoder with cross-attention to N_z thoughts, prior by name."""
    return LatentThoughtModel.build(cfg.decoder_config(vocab_size), cfg.prior, **cfg.prior_kwargs)


MODELS = {"ltm": build_ltm, **PONDER_MODELS}  # + vanilla, ponderlm2, pause, looped


def build_model(cfg: TrainConfig, vocab_size: int) -> nn.Module:
    """Build the family named by `cfg.model` for a tokenizer of `vocab_size` ids."""
    builder = resolve(cfg.model, MODELS, "model family")
    try:
        return builder(cfg, vocab_size)
    except TypeError as err:  # a prior that does not take the given prior_kwargs
        raise ValueError(f"cannot build model '{cfg.model}' with prior '{cfg.prior}' and "
                         f"prior_kwargs {cfg.prior_kwargs}: {err}.") from err


def build_run_guide(cfg: TrainConfig):
    """The run's guide. A deterministic family left at the default guide gets the empty guide."""
    from inference import build_guide
    from ltm.train_config import ConfigError

    name = cfg.guide
    if cfg.model in DETERMINISTIC_MODELS and name == "gaussian":
        name = "none"  # its thoughts are pyro.deterministic sites: nothing to infer
    try:
        return build_guide(name, **cfg.guide_kwargs)
    except TypeError as err:
        raise ConfigError(f"guide '{name}' does not take guide_kwargs {cfg.guide_kwargs}: {err}.") from None
