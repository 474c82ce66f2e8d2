"""CLI builders of PonderLM (v1) and adaptive latent CoT: `(cfg: TrainConfig, vocab_size) -> family`.

Register them with `MODELS.update(PONDERING_MODELS)` in `ltm.families`. Each reads its budget knobs
from the config (`ponder_passes`; `max_latent_steps`, `halt_lambda`, `halt_beta`,
`prune_threshold`; the defaults here apply while a field is missing) and builds its decoder from
the config's shape without cross-attention. Train them with the empty guide (`--guide none`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ltm.decoder import Decoder
from ltm.ponder.adaptive_cot import AdaptiveLatentCoT
from ltm.ponder.ponderlm import PonderLM

if TYPE_CHECKING:
    from ltm.train_config import TrainConfig


def _decoder(cfg: TrainConfig, vocab_size: int) -> Decoder:
    return Decoder(dataclasses.replace(cfg.decoder_config(vocab_size), n_latent=0))


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


PONDERING_MODELS = {"ponderlm": build_ponderlm, "adaptive_cot": build_adaptive_cot}
