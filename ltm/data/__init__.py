"""Data: the embedded corpus or local/hub text, a tokenizer, packed token blocks, batch order.

    from ltm.data import DataConfig, prepare_data, BatchIterator
    data = prepare_data(DataConfig(block_size=128), cache_dir="runs/cache")
    batches = BatchIterator(data.train, batch_size=32, seed=0)
    x = next(batches)  # (B, T+1): inputs x[:, :-1], targets x[:, 1:]

Corpora larger than memory: `ltm.data.shard_prep.prepare_shards` (`python -m ltm.prepare`) writes
token shards that `prepare_data` opens memory-mapped when `dataset` names their folder.

The names below are imported on first use, so a process that only tokenizes (the workers of
`python -m ltm.prepare`) does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BatchIterator": "ltm.data.blocks", "TokenBlocks": "ltm.data.blocks",
    "embedded_documents": "ltm.data.embedded",
    "DataConfig": "ltm.data.prepare", "PreparedData": "ltm.data.prepare", "prepare_data": "ltm.data.prepare",
    "decode": "ltm.data.tokenizer", "encode": "ltm.data.tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ltm.data' has no attribute '{name}'")
