"""Data: the embedded corpus or local/hub text, a tokenizer, packed token blocks, batch order.

    from ltm.data import DataConfig, prepare_data, BatchIterator
    data = prepare_data(DataConfig(block_size=128), cache_dir="runs/cache")
    batches = BatchIterator(data.train, batch_size=32, seed=0)
    x = next(batches)  # (B, T+1): inputs x[:, :-1], targets x[:, 1:]
"""

from __future__ import annotations

from ltm.data.blocks import BatchIterator, TokenBlocks
from ltm.data.embedded import embedded_documents
from ltm.data.prepare import DataConfig, PreparedData, prepare_data
from ltm.data.tokenizer import decode, encode

__all__ = ["BatchIterator", "DataConfig", "PreparedData", "TokenBlocks", "decode", "embedded_documents",
           "encode", "prepare_data"]
