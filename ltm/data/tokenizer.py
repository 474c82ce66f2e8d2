"""Tokenizers: train a byte-level BPE, or load a tokenizer.json; find BOS/EOS/PAD; encode/decode.

A trained tokenizer has the 256 byte symbols, the merges, and three special tokens
`<|bos|>`, `<|eos|>`, `<|pad|>`. A loaded one (GPT-2, GPT-NeoX) keeps its vocabulary; its
`<|endoftext|>` serves as both BOS and EOS, as those models were trained with it, and as PAD
when it has no padding token (GPT-NeoX has `<|padding|>`); Llama's are `<s>` and `</s>`, Llama 3's
`<|begin_of_text|>` and `<|end_of_text|>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ltm.core.errors import ConfigError, DataError, MissingFileError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD)
MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte, plus the specials

# Names other tokenizers use for the same roles, in order of preference.
_BOS_NAMES = (BOS, "<|endoftext|>", "<s>", "<|begin_of_text|>", "[CLS]")
_EOS_NAMES = (EOS, "<|endoftext|>", "</s>", "<|end_of_text|>", "[SEP]")
_PAD_NAMES = (PAD, "<|padding|>", "<pad>", "[PAD]")


def check_bpe_vocab_size(vocab_size: int, extra_special: int = 0) -> None:
    """Raise ValueError when a byte-level BPE with `extra_special` more special tokens cannot have
    `vocab_size` entries."""
    least, specials = MIN_BPE_VOCAB + extra_special, len(SPECIAL_TOKENS) + extra_special
    if vocab_size < least:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least {least} "
            f"(256 bytes + {specials} special tokens); set vocab_size >= {least}.")


def check_tokenizer_choice(tokenizer: str, vocab_size: int, bpe_option: str) -> None:
    """Refuse a byte-level BPE vocabulary too small for it, or a tokenizer.json that does not exist.

    Args:
        tokenizer: "bpe" or a tokenizer.json path.
        vocab_size: The BPE's vocabulary (read only for "bpe").
        bpe_option: How the caller's user asks for a BPE, for the message ("--tokenizer bpe").
    """
    if tokenizer == "bpe":
        check_bpe_vocab_size(vocab_size)
    elif not Path(tokenizer).expanduser().is_file():
        raise MissingFileError(f"tokenizer file {tokenizer!r} does not exist; pass the path to a "
                               f"tokenizer.json, or {bpe_option} to train one on the data.")


def train_bpe(texts: Iterable[str], vocab_size: int, length: int | None = None,
              extra_special: Sequence[str] = ()) -> Tokenizer:
    """Train a byte-level BPE on `texts` (deterministic for the same texts).

    Args:
        texts: Training documents.
        vocab_size: Target size including bytes and special tokens (at least 259 plus the extra
            specials); a small corpus may yield fewer entries.
        length: Number of texts, if known (for the trainer's bookkeeping only).
        extra_special: More special tokens, given the ids after BOS, EOS and PAD (3, 4, ...).
    """
    check_bpe_vocab_size(vocab_size, len(extra_special))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *extra_special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer, length=length)
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json, adding `<|bos|>`/`<|eos|>` if it has no token for those roles.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a tokenizer the `tokenizers` library can read.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"tokenizer file {str(path)!r} does not exist; pass the path to a "
                               f"tokenizer.json, or tokenizer='bpe' to train one on the data.")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise DataError(f"could not read tokenizer file {str(path)!r} ({e}); pass a valid tokenizer.json "
                        f"(as saved by the `tokenizers` library), or tokenizer='bpe'.") from e
    vocab = tok.get_vocab(with_added_tokens=True)
    missing = [name for names, name in ((_BOS_NAMES, BOS), (_EOS_NAMES, EOS))
               if not any(n in vocab for n in names)]
    if missing:
        tok.add_special_tokens(missing)
    return tok


def special_ids(tok: Tokenizer) -> tuple[int, int, int]:
    """Return (bos_id, eos_id, pad_id); PAD falls back to EOS when the tokenizer has none."""
    vocab = tok.get_vocab(with_added_tokens=True)

    def first(names: Sequence[str]) -> int | None:
        return next((vocab[n] for n in names if n in vocab), None)

    bos, eos = first(_BOS_NAMES), first(_EOS_NAMES)
    if bos is None or eos is None:
        raise DataError("the tokenizer has no BOS/EOS token; load it with "
                        "ltm.data.tokenizer.load_tokenizer, which adds them.")
    pad = first(_PAD_NAMES)
    return bos, eos, eos if pad is None else pad


def encode(tok: Tokenizer, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Token ids of `text` (no post-processor specials), optionally wrapped in BOS/EOS."""
    ids = tok.encode(text, add_special_tokens=False).ids
    b, e, _ = special_ids(tok) if (bos or eos) else (0, 0, 0)
    return ([b] if bos else []) + ids + ([e] if eos else [])


def decode(tok: Tokenizer, ids, skip_special_tokens: bool = True) -> str:
    """Text of `ids` (a list, numpy array or tensor of ints); special tokens dropped by default."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
