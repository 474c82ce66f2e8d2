"""The model families by registry name: `--model NAME`, or a `module:Class` path to your own.

A family is an `ltm.models.Family` subclass in a file of its own; registering it is one line here.
Its `name` is the key, and the key of its config section.
"""

from __future__ import annotations

from ltm.core.errors import ConfigError
from ltm.core.registry import resolve
from ltm.models.family import Family
from ltm.models.latent_thought import LatentThoughtModel
from ltm.ponder.adaptive_cot import AdaptiveLatentCoT
from ltm.ponder.coconut import Coconut
from ltm.ponder.coconut_stochastic import StochasticCoconut
from ltm.ponder.looped import LoopedDecoder
from ltm.ponder.pause import PauseTokens
from ltm.ponder.ponderlm import PonderLM
from ltm.ponder.ponderlm2 import PonderLM2
from ltm.ponder.ponderlm2_stochastic import StochasticPonderLM2
from ltm.ponder.vanilla import VanillaDecoder

FAMILIES: dict[str, type[Family]] = {
    "ltm": LatentThoughtModel,
    "vanilla": VanillaDecoder,
    "ponderlm2": PonderLM2,
    "ponderlm": PonderLM,
    "adaptive_cot": AdaptiveLatentCoT,
    "pause": PauseTokens,
    "looped": LoopedDecoder,
    "ponderlm2_stochastic": StochasticPonderLM2,
    "coconut": Coconut,
    "coconut_stochastic": StochasticCoconut,
}


def resolve_family(spec: str | type) -> type[Family]:
    """The family class named by `spec`: a key of `FAMILIES`, a `module:Class` path, or a class.

    Raises:
        ConfigError: for an unknown name, or a class that is not an `ltm.models.Family`.
    """
    cls = resolve(spec, FAMILIES, "model family", Family)
    if not cls.name:
        raise ConfigError(f"model family {cls.__name__} has no `name`; set the class attribute `name` "
                          f"(its config-section key).")
    return cls
