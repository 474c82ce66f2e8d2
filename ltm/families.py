"""Model families the CLI can build, by registry name (`--model ltm`) or `module:function` path.

A family is a function `(cfg: TrainConfig, vocab_size: int) -> nn.Module` returning a Pyro program
with `.model(tokens)` (the Pyro model), `.prior` and `.decoder`, which the dual-rate trainer,
the checkpoints and the sampler all accept. A later family registers one more function here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ltm.model import LatentThoughtModel
from ltm.registry import resolve

if TYPE_CHECKING:
    from ltm.train_config import TrainConfig


def build_ltm(cfg: TrainConfig, vocab_size: int) -> LatentThoughtModel:
    """The Latent Thought Model: decoder with cross-attention to N_z thoughts, prior by name."""
    return LatentThoughtModel.build(cfg.decoder_config(vocab_size), cfg.prior, **cfg.prior_kwargs)


MODELS = {"ltm": build_ltm}


def build_model(cfg: TrainConfig, vocab_size: int) -> nn.Module:
    """Build the family named by `cfg.model` for a tokenizer of `vocab_size` ids."""
    builder = resolve(cfg.model, MODELS, "model family")
    try:
        return builder(cfg, vocab_size)
    except TypeError as err:  # a prior that does not take the given prior_kwargs
        raise ValueError(f"cannot build model '{cfg.model}' with prior '{cfg.prior}' and "
                         f"prior_kwargs {cfg.prior_kwargs}: {err}.") from err
