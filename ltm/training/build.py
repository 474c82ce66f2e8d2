"""A run's model family and guide, built from its `TrainConfig`."""

from __future__ import annotations

from ltm.core.errors import ConfigError
from ltm.inference import LocalGuide, build_guide
from ltm.models import Family
from ltm.training.config import TrainConfig


def build_model(cfg: TrainConfig, vocab_size: int) -> Family:
    """The family `cfg.model` names, from the shared decoder shape, its section and the prior.

    Raises:
        ConfigError: a tokenizer of more tokens than the embedding's `vocab_rows`.
    """
    if cfg.vocab_rows is not None and vocab_size > cfg.vocab_rows:
        raise ConfigError(f"the tokenizer has {vocab_size} tokens but the model's embedding has "
                          f"vocab_rows={cfg.vocab_rows} rows; use the tokenizer that came with the "
                          f"weights (or a larger vocab_rows).")
    return cfg.family.from_config(cfg.decoder_config(vocab_size), cfg.options, cfg.prior,
                                  cfg.prior_kwargs)


def build_run_guide(cfg: TrainConfig, model: Family) -> LocalGuide:
    """The run's guide: `cfg.guide`, or the family's default guide when none is named.

    Guides with global parameters (an encoder, a flow) are sized from `model`: its vocabulary and
    its prior's thought shape (N, D).
    """
    spec = cfg.guide or cfg.family.default_guide
    context = {"vocab_size": model.decoder.cfg.vocab_size, "num_latents": model.prior.num_latents,
               "latent_dim": model.prior.latent_dim}
    try:
        guide = build_guide(spec, context, **cfg.guide_kwargs)
    except TypeError as err:
        raise ConfigError(f"guide '{spec}' does not take guide_kwargs {cfg.guide_kwargs}: {err}.") from None
    model.prior.bind_guide(guide)  # a prior built on the guide's encoder (vamp) reads it from here
    return guide
