"""Builders of the token-level families for the CLI trainer: `(cfg: TrainConfig, vocab_size) -> family`.

Register them with `MODELS.update(PONDER_MODELS)` in `ltm.families`. Each reads its budget knob
from the config (`thoughts`, `jacobi_sweeps`, `max_jacobi_sweeps`, `loops`; defaults here while a
field is missing) and builds its decoder from the config's shape without cross-attention. Train
the deterministic ones with the empty guide (`--guide none`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ltm.decoder import Decoder
from ltm.ponder.baselines import LoopedDecoder, PauseTokens
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


PONDER_MODELS = {"vanilla": build_vanilla, "ponderlm2": build_ponderlm2, "pause": build_pause,
                 "looped": build_looped, "ponderlm2_stochastic": build_ponderlm2_stochastic}
