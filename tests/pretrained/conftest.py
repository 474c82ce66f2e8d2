"""Tiny random Hugging Face checkpoints, built with `transformers` and saved locally (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

transformers = pytest.importorskip(
    "transformers", reason="the hf extra is not installed (pip install -e '.[hf]'): no transformers "
                           "to build reference checkpoints with")

ROWS = 300  # embedding rows; the tokenizer has fewer ids (297), as real checkpoints often do
SHAPE = dict(vocab_size=ROWS, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
KINDS = {  # name -> (model class, config class, extra config)
    "llama_gqa_tied": ("LlamaForCausalLM", "LlamaConfig", dict(tie_word_embeddings=True)),
    "llama3_untied": ("LlamaForCausalLM", "LlamaConfig",
                      dict(tie_word_embeddings=False, rope_scaling=LLAMA3_ROPE, rope_theta=500000.0)),
    "qwen2_bias": ("Qwen2ForCausalLM", "Qwen2Config", dict(tie_word_embeddings=True)),
}
TEXT = ("the cat sat on a mat and the dog ran to the big red house with a small blue car in the park "
        "while a bird sang over the green tree near the old river. ")


def byte_bpe(vocab_size: int) -> Tokenizer:
    """A byte-level BPE with `<|endoftext|>`, as SmolLM2's and Qwen2's tokenizers have."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT] * 20, trainer)
    return tok


def save_random(kind: str, folder: Path, seed: int = 0) -> Path:
    """A random checkpoint of `kind` (weights far from their tiny init, so differences show)."""
    model_cls, config_cls, extra = KINDS[kind]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**SHAPE, **extra)
    model = getattr(transformers, model_cls)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.1)
    model.save_pretrained(folder)
    byte_bpe(ROWS).save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Every kind of tiny checkpoint, by name."""
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_random(kind, root / kind) for kind in KINDS}


def reference(folder: Path):
    """The checkpoint as `transformers` runs it (fp32, eval mode)."""
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()  # saved in fp32
