"""Builders of the token-level families for the CLI trainer: `(cfg: TrainConfig, vocab_size) -> family`.

`ltm.families` registers `PONDER_MODELS`. Each builder reads its budget knobs from the config
(`thoughts`, `jacobi_sweeps`, `max_jacobi_sweeps`, `loops`, `ponder_passes`, `max_latent_steps`,
`halt_lambda`, `halt_beta`, `prune_threshold`) and builds its decoder from the config's shape
without cross-attention. The deterministic families train with the empty guide (`--guide none`,
chosen for them when the guide is left at its default).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ltm.decoder import Decoder
from ltm.ponder.adaptive_cot import AdaptiveLatentCoT
from ltm.ponder.baselines import LoopedDecoder, PauseTokens
from ltm.ponder.ponderlm import PonderLM
from ltm.ponder.ponderlm2 import PonderLM2
from ltm.ponder.ponderlm2_stochastic import StochasticPonderLM2
from ltm.ponder.vanilla import VanillaDecoder

if TYPE_CHECKING:
    from ltm.train_config import TrainConfig


def _decoder(cfg: TrainConfig, vocab_size: int) -> Decoder:
    return Decoder(dataclasses.replace(cfg.decoder_config(vocab_size), n_latent=0))


def build_vanilla(cfg: TrainConfig, vocab_size: int) -> VanillaDecoder:
    """The plain decoder (no thoughts): the control of every comparison."""
    return VanillaDecoder(_decoder(cfg, vocab_size))


def build_ponderlm2(cfg: TrainConfig, vocab_size: int) -> PonderLM2:
    """PonderLM-2 with K = `thoughts` thoughts per token and J = `jacobi_sweeps` training sweeps
    (drawn from [jacobi_sweeps, max_jacobi_sweeps] per step when the latter is set)."""
    return PonderLM2(_decoder(cfg, vocab_size), thoughts=getattr(cfg, "thoughts", 1),
                     jacobi_sweeps=getattr(cfg, "jacobi_sweeps", 3),
                     max_jacobi_sweeps=getattr(cfg, "max_jacobi_sweeps", None))


def build_ponderlm2_stochastic(cfg: TrainConfig, vocab_size: int) -> StochasticPonderLM2:
    """PonderLM-2 with noisy thoughts N(h, sigma^2) (sigma learned, `prior_kwargs` init_sigma);
    train with `--guide ltm.ponder.ponderlm2_stochastic:ThoughtGuide` and inner steps > 0."""
    return StochasticPonderLM2(_decoder(cfg, vocab_size), seq_len=cfg.block_size,
                               thoughts=getattr(cfg, "thoughts", 1),
                               init_sigma=cfg.prior_kwargs.get("init_sigma", 0.1),
                               jacobi_sweeps=getattr(cfg, "jacobi_sweeps", 3))


def build_pause(cfg: TrainConfig, vocab_size: int) -> PauseTokens:
    """Pause tokens: P = `thoughts` learned pause slots after every token."""
    return PauseTokens(_decoder(cfg, vocab_size), pauses=getattr(cfg, "thoughts", 1))


def build_looped(cfg: TrainConfig, vocab_size: int) -> LoopedDecoder:
    """The block stack looped L = `loops` times with shared weights."""
    return LoopedDecoder(_decoder(cfg, vocab_size), loops=getattr(cfg, "loops", 2))


def build_ponderlm(cfg: TrainConfig, vocab_size: int) -> PonderLM:
    """PonderLM (v1) with S = `ponder_passes` pondering passes."""
    return PonderLM(_decoder(cfg, vocab_size), passes=getattr(cfg, "ponder_passes", 3))


def build_adaptive_cot(cfg: TrainConfig, vocab_size: int) -> AdaptiveLatentCoT:
    """Adaptive latent CoT with l_max = `max_latent_steps`, lambda = `halt_lambda`,
    beta = `halt_beta` and the reach threshold `prune_threshold`."""
    return AdaptiveLatentCoT(_decoder(cfg, vocab_size), max_steps=getattr(cfg, "max_latent_steps", 3),
                             halt_lambda=getattr(cfg, "halt_lambda", 0.01),
                             halt_beta=getattr(cfg, "halt_beta", 1.0),
                             prune_threshold=getattr(cfg, "prune_threshold", 0.0))


DETERMINISTIC_MODELS = {"vanilla": build_vanilla, "ponderlm2": build_ponderlm2, "pause": build_pause,
                        "looped": build_looped, "ponderlm": build_ponderlm,
                        "adaptive_cot": build_adaptive_cot}
PONDER_MODELS = {**DETERMINISTIC_MODELS, "ponderlm2_stochastic": build_ponderlm2_stochastic}
