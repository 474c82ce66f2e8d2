"""Text in, token blocks out: load, split, tokenize, pack, and cache on disk.

Cache layout under `cache_dir`: one folder per key (a hash of the config without `block_size`,
the data files' paths/sizes/mtimes, the tokenizer file's, and library versions) holding
`tokenizer.json`, `train.npy`, `val.npy` (packed token streams) and `meta.json`; plus `hf/`,
the `datasets` Arrow cache. Block size is applied when the streams are opened, so changing it
reuses the cache. A second call with the same config memory-maps the arrays and returns at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import Tokenizer

from ltm.core.errors import ConfigError, DataError
from ltm.data import corpus, reasoning, shards
from ltm.data import tokenizer as tk
from ltm.data.blocks import TokenBlocks
from ltm.data.packing import check_split, pack, split_documents
from ltm.data.reasoning_data import build_reasoning, open_reasoning

CACHE_VERSION = 1


@dataclass
class DataConfig:
    """What to train on and how to cut it.

    Attributes:
        dataset: "embedded" (the stdlib's documentation, offline), a reasoning task
            (`reasoning:addition?digits=4&steps=1`, see `ltm.data.reasoning`), a local file or folder
            (.txt, .jsonl/.json(.gz), .parquet, .csv), a hub dataset name (needs a hub), or a
            folder of token shards written by `python -m ltm.prepare` (read in place, with its own
            tokenizer and split).
        text_field: Column holding the text (json/parquet/csv).
        tokenizer: "bpe" to train a byte-level BPE on the training split, or a tokenizer.json path.
        vocab_size: Size of the trained BPE (at least 259); ignored for a tokenizer.json.
        block_size: T, tokens the model sees per block; stored blocks have T + 1 ids.
        val_fraction: Fraction of documents held out for validation (0 for none).
        seed: Seed of the document split.
        max_documents: Use only the first this many documents (None for all).
        encoding: Text encoding of local .txt, .json(l) and .csv files.
    """

    dataset: str = "embedded"
    text_field: str = "text"
    tokenizer: str = "bpe"
    vocab_size: int = 512
    block_size: int = 128
    val_fraction: float = 0.05
    seed: int = 0
    max_documents: int | None = None
    encoding: str = "utf-8"


@dataclass
class PreparedData:
    """Tokenized, packed data: the tokenizer, train/val blocks, special ids, and the cache folder."""

    tokenizer: Tokenizer
    train: TokenBlocks
    val: TokenBlocks
    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int
    cache_path: Path
    from_cache: bool

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, optionally wrapped in BOS/EOS."""
        return tk.encode(self.tokenizer, text, bos=bos, eos=eos)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of token ids (list, array or tensor)."""
        return tk.decode(self.tokenizer, ids, skip_special_tokens=skip_special_tokens)


def _check(cfg: DataConfig) -> None:
    if cfg.block_size < 1:
        raise ConfigError(f"block_size must be at least 1, got {cfg.block_size}.")
    check_split(cfg.val_fraction, cfg.max_documents)
    tk.check_tokenizer_choice(cfg.tokenizer, cfg.vocab_size, "tokenizer='bpe'")


def cache_key(cfg: DataConfig) -> str:
    """Hash of everything the cached streams depend on (all of `cfg` but `block_size`)."""
    fields = dataclasses.asdict(cfg)
    fields.pop("block_size")
    if cfg.encoding == "utf-8":  # the default keeps the keys of caches made before the field existed
        fields.pop("encoding")
    if cfg.tokenizer != "bpe":
        path = Path(cfg.tokenizer).expanduser().resolve()
        fields["tokenizer"] = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
        fields.pop("vocab_size")
    blob = {"config": fields, "data": corpus.fingerprint(cfg.dataset), "version": CACHE_VERSION,
            "tokenizers": tokenizers.__version__, "numpy": np.__version__.split(".")[0]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _build(cfg: DataConfig, cache_dir: Path, out: Path) -> None:
    """Load, split, tokenize and pack; write tokenizer.json, train.npy, val.npy, meta.json to `out`
    (a reasoning task: one example per block, `ltm.data.reasoning_data`)."""
    if reasoning.is_reasoning_spec(cfg.dataset):
        return build_reasoning(cfg, reasoning.parse_reasoning(cfg.dataset), out)
    docs = corpus.load_documents(cfg.dataset, cfg.text_field, cache_dir / "hf",
                                 cfg.encoding)[:cfg.max_documents]
    if cfg.val_fraction > 0 and len(docs) < 2:
        raise DataError(f"dataset {cfg.dataset!r} has only {len(docs)} document; a train/validation "
                        f"split needs at least 2 (split the text into paragraphs, rows or files), "
                        f"or set val_fraction=0.")
    train_idx, val_idx = split_documents(len(docs), cfg.val_fraction, cfg.seed)
    train_docs, val_docs = [docs[i] for i in train_idx], [docs[i] for i in val_idx]
    if cfg.tokenizer == "bpe":
        tok = tk.train_bpe(train_docs, cfg.vocab_size, length=len(train_docs))
    else:
        tok = tk.load_tokenizer(cfg.tokenizer)
    bos, eos, pad = tk.special_ids(tok)
    tok.save(str(out / "tokenizer.json"))
    np.save(out / "train.npy", pack(tok, train_docs, bos, eos, "tokenizing train"))
    np.save(out / "val.npy", pack(tok, val_docs, bos, eos, "tokenizing val"))
    meta = {"config": dataclasses.asdict(cfg), "documents": {"train": len(train_docs), "val": len(val_docs)},
            "characters": sum(map(len, docs))}

    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def _blocks(tokens: np.ndarray, block_size: int, split: str, cfg: DataConfig) -> TokenBlocks:
    n, need = int(tokens.shape[0]), block_size + 1
    if n < need and (split == "train" or cfg.val_fraction > 0):
        hint = " or a larger val_fraction" if split == "validation" else ""
        raise DataError(f"the {split} split of {cfg.dataset!r} has {n} tokens but one block needs "
                        f"block_size + 1 = {need}: use block_size <= {max(1, n - 1)}, more text{hint}.")
    return TokenBlocks(tokens, block_size)


def _open_prepared(cfg: DataConfig) -> PreparedData:
    """The blocks of a folder of token shards (`ltm.data.shard_prep`), every shard checked first."""
    folder = Path(cfg.dataset).expanduser()
    index, train, val = shards.open_prepared(folder)
    tok = Tokenizer.from_file(str(folder / shards.TOKENIZER_FILE))
    if cfg.tokenizer != "bpe" and tk.load_tokenizer(cfg.tokenizer).to_str() != tok.to_str():
        raise ConfigError(f"the prepared folder {cfg.dataset!r} was tokenized with another tokenizer than "
                          f"{cfg.tokenizer!r}; prepare it again with --tokenizer {cfg.tokenizer}, or train "
                          f"with its own tokenizer (--tokenizer bpe).")
    data_cfg = dataclasses.replace(cfg, val_fraction=index["config"]["val_fraction"])
    return PreparedData(tokenizer=tok, train=_blocks(train, cfg.block_size, "train", data_cfg),
                        val=_blocks(val, cfg.block_size, "validation", data_cfg), bos_id=index["bos_id"],
                        eos_id=index["eos_id"], pad_id=index["pad_id"], vocab_size=index["vocab_size"],
                        cache_path=folder, from_cache=True)


def prepare_data(cfg: DataConfig, cache_dir: str | Path) -> PreparedData:
    """Load text, get or train the tokenizer, tokenize, pack, split, and cache; or reuse the cache.

    Documents are split into train/val by a seeded permutation (before tokenizing, so a trained
    BPE sees training text only); each split is packed into one stream (see `ltm.data.blocks`)
    and saved as .npy, opened memory-mapped.

    Raises:
        FileNotFoundError: A missing data path or tokenizer file.
        ValueError: Unreadable or empty data, a missing text column, too little text for one block
            per split, a vocab_size below the byte-level minimum, or an unreadable tokenizer.
    A `dataset` that names a folder prepared by `python -m ltm.prepare` (it holds `index.json`) is
    opened memory-mapped instead: its tokenizer, split and shards are the ones it was prepared with.
    """
    _check(cfg)
    if shards.is_prepared(cfg.dataset):
        return _open_prepared(cfg)
    cache_dir = Path(cache_dir).expanduser()
    path = cache_dir / cache_key(cfg)
    from_cache = (path / "meta.json").is_file()
    if not from_cache:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=cache_dir))
        try:
            _build(cfg, cache_dir, tmp)
            os.replace(tmp, path)  # atomic; if another process got there first, keep theirs
        except OSError:
            if not (path / "meta.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    bos, eos, pad = tk.special_ids(tok)
    if reasoning.is_reasoning_spec(cfg.dataset):
        train, val = open_reasoning(cfg, reasoning.parse_reasoning(cfg.dataset), path, pad)
    else:
        train = _blocks(np.load(path / "train.npy", mmap_mode="r"), cfg.block_size, "train", cfg)
        val = _blocks(np.load(path / "val.npy", mmap_mode="r"), cfg.block_size, "validation", cfg)
    return PreparedData(tokenizer=tok, train=train, val=val, bos_id=bos, eos_id=eos, pad_id=pad,
                        vocab_size=tok.get_vocab_size(with_added_tokens=True), cache_path=path,
                        from_cache=from_cache)
