"""The decoder and its parts, the family interface, and the Latent Thought Model family.

    from ltm.models import DecoderConfig, LatentThoughtModel
    ltm = LatentThoughtModel.build(DecoderConfig(vocab_size=512, n_latent=4, d_latent=32))
    ltm, tokenizer = from_hf("HuggingFaceTB/SmolLM2-135M", LatentThoughtModel, LTMOptions(n_latent=30))
"""

from __future__ import annotations

from ltm.models.config import DecoderConfig
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState, Family, NoOptions
from ltm.models.kv_cache import KVCache
from ltm.models.latent_thought import LatentThoughtModel, LTMOptions
from ltm.models.likelihood import TokenSequence
from ltm.models.pretrained import from_hf

__all__ = ["DecoderConfig", "Decoder", "DecodeState", "Family", "NoOptions", "KVCache",
           "LatentThoughtModel", "LTMOptions", "TokenSequence", "from_hf"]
