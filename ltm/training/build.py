"""A run's model family and guide, built from its `TrainConfig`."""

from __future__ import annotations

from ltm.core.errors import ConfigError
from ltm.inference import LocalGuide, build_guide
from ltm.models import Family
from ltm.training.config import TrainConfig


def build_model(cfg: TrainConfig, vocab_size: int) -> Family:
    """The family `cfg.model` names, from the shared decoder shape, its section and the prior."""
    return cfg.family.from_config(cfg.decoder_config(vocab_size), cfg.options, cfg.prior,
                                  cfg.prior_kwargs)


def build_run_guide(cfg: TrainConfig) -> LocalGuide:
    """The run's guide: `cfg.guide`, or the family's default guide when none is named."""
    spec = cfg.guide or cfg.family.default_guide
    try:
        return build_guide(spec, **cfg.guide_kwargs)
    except TypeError as err:
        raise ConfigError(f"guide '{spec}' does not take guide_kwargs {cfg.guide_kwargs}: {err}.") from None
