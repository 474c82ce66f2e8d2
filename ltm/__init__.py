"""ltm: language models that think in latent space before they speak."""

from __future__ import annotations

from ltm.config import DecoderConfig
from ltm.decoder import Decoder
from ltm.kv_cache import KVCache
from ltm.likelihood import TokenSequence
from ltm.model import LatentThoughtModel

__all__ = ["DecoderConfig", "Decoder", "KVCache", "TokenSequence", "LatentThoughtModel"]
