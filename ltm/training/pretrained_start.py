"""A run started from a pretrained Hugging Face checkpoint (`--init-from-hf`): the run takes its
shape and tokenizer, the family its weights; `--freeze decoder` keeps those weights fixed.

    cfg, folder = pretrained_config(cfg)          # before the data and the model are built
    model = build_model(cfg, vocab_size)
    new = load_pretrained(model, read_hf_weights(folder), cfg.init_from_hf, guide)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ltm.core.errors import ConfigError
from ltm.models import Family
from ltm.models.hf_format import decoder_config_from_hf
from ltm.models.pretrained import (
    TOKENIZER,
    build_family,
    locate,
    read_hf_config,
    read_hf_tokenizer,
    weight_files,
)
from ltm.training.config import TrainConfig, flag_for

# The run's fields a pretrained checkpoint decides, and the DecoderConfig field each comes from.
SHAPE_FIELDS = {"d_model": "d_model", "n_layer": "n_layer", "n_head": "n_head", "n_kv_head": "n_kv_head",
                "d_ff": "d_ff", "attn_bias": "attn_bias", "tie_embeddings": "tie_embeddings",
                "rope_base": "rope_base", "rope_scaling": "rope_scaling", "norm_eps": "norm_eps",
                "vocab_rows": "vocab_size"}


def pretrained_config(cfg: TrainConfig) -> tuple[TrainConfig, Path]:
    """`cfg` with the shape and tokenizer of the checkpoint `cfg.init_from_hf`, and its folder.

    Everything is checked before any work: the architecture, the files, the tokenizer against the
    embedding, and the block size against the checkpoint's positions.

    Raises:
        ConfigError: a shape option given that differs from the checkpoint's, another tokenizer,
            or what `ltm.models.pretrained` refuses.
    """
    source = cfg.init_from_hf
    folder = locate(source)
    hf = read_hf_config(folder)
    decoder = decoder_config_from_hf(hf, block_size=cfg.data.block_size, source=source)
    defaults = TrainConfig()
    shape = {name: getattr(decoder, place) for name, place in SHAPE_FIELDS.items()}
    for name, value in shape.items():
        given = getattr(cfg, name)
        if given != getattr(defaults, name) and given != value:
            raise ConfigError(f"{flag_for(name)} {given} does not fit {source}, whose {name} is "
                              f"{value}; drop it (a pretrained start takes the checkpoint's shape).")
    tokenizer = str(folder / TOKENIZER)
    if cfg.data.tokenizer not in (defaults.data.tokenizer, tokenizer):
        raise ConfigError(f"--tokenizer {cfg.data.tokenizer} is not the tokenizer of {source}; drop "
                          f"it: a pretrained start reads text with the checkpoint's tokenizer.")
    read_hf_tokenizer(folder, decoder.vocab_size)  # present, and fits the embedding
    weight_files(folder)  # every shard present
    cfg = cfg.replace(**shape, data=dataclasses.replace(cfg.data, tokenizer=tokenizer))
    with torch.device("meta"):  # the family at this shape, built without memory: its options fit
        build_family(cfg.family, cfg.decoder_config(decoder.vocab_size), cfg.options, cfg.prior,
                     cfg.prior_kwargs, source)
    return cfg, folder


def freeze_pretrained(model: Family, guide: nn.Module) -> int:
    """Keep the pretrained decoder's parameters fixed (`--freeze decoder`); return how many are.

    Raises:
        ConfigError: the family adds nothing, so nothing would be left to train.
    """
    fixed = model.pretrained_names()
    frozen = 0
    for name, p in model.named_parameters():
        if name in fixed:
            p.requires_grad_(False)
            frozen += p.numel()
    trainable = [p for p in (*model.parameters(), *guide.parameters()) if p.requires_grad]
    if not trainable:
        raise ConfigError(f"--freeze decoder leaves model '{model.name}' nothing to train (it adds no "
                          f"parameters to the decoder); use --freeze none.")
    return frozen
