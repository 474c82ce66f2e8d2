"""Fixed-length training blocks over a packed token stream, and exact, resumable batch order.

Packing: the stream is BOS doc EOS BOS doc EOS ... (with one shared separator between documents
when BOS and EOS are the same token, as for GPT-2). Block i is `stream[i*T : i*T + T + 1]`: the
T inputs and, shifted by one, the T targets. Consecutive blocks share one boundary token (stride
T), so every token after the first is a target exactly once; a ragged tail shorter than T + 1 is
dropped. Blocks are views computed on demand, so one stream serves every block size.
"""

from __future__ import annotations

import numpy as np
import torch

from ltm.core.errors import ConfigError, DataError


class TokenBlocks:
    """Blocks of `block_size + 1` token ids over a 1-D (memory-mapped) token stream.

    Args:
        tokens: Token ids, shape (N,), any integer dtype; a `np.memmap` stays on disk.
        block_size: T, the tokens the model sees per block.
    """

    def __init__(self, tokens: np.ndarray, block_size: int):
        if block_size < 1:
            raise ConfigError(f"block_size must be at least 1, got {block_size}.")
        self.tokens = tokens  # (N,)
        self.block_size = block_size
        self._offsets = np.arange(block_size + 1)  # (T+1,)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return max(0, (self.num_tokens - 1) // self.block_size)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"block {i} out of range for {n} blocks")
        start = (i % n) * self.block_size
        return torch.from_numpy(self.tokens[start:start + self.block_size + 1].astype(np.int64))  # (T+1,)

    def batch(self, indices) -> torch.Tensor:
        """Blocks at `indices` (a sequence, array or tensor of ints), shape (B, T+1), int64."""
        idx = np.asarray(indices.tolist() if hasattr(indices, "tolist") else indices, dtype=np.int64)  # (B,)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"block indices out of range for {n} blocks")
        rows = (idx % max(n, 1))[:, None] * self.block_size + self._offsets  # (B, T+1)
        return torch.from_numpy(np.asarray(self.tokens[rows], dtype=np.int64))  # (B, T+1)

    def fixed_batches(self, batch_size: int, num_batches: int) -> list[torch.Tensor]:
        """The first `num_batches` batches of consecutive blocks (a fixed, reproducible subset).

        Raises:
            ValueError: when there is not one whole block (block_size + 1 tokens).
        """
        n = len(self)
        if n == 0:
            raise DataError("no blocks to evaluate: the text is shorter than one block (block_size + 1 "
                            "tokens); give more text.")
        starts = range(0, min(n, batch_size * num_batches), batch_size)
        return [self.batch(range(s, min(s + batch_size, n))) for s in starts]  # each (B, T+1)

    def __repr__(self) -> str:
        return f"TokenBlocks({len(self)} blocks of {self.block_size}+1 tokens, {self.num_tokens} tokens)"


class BatchIterator:
    """Endless batches of blocks in a seeded shuffled order; exact to resume from `state_dict`.

    Epoch e visits the blocks in the permutation drawn from (seed, e), in batches of
    `batch_size`, dropping the ragged last batch; the next epoch starts a fresh permutation.

    Args:
        blocks: The blocks to draw from.
        batch_size: B, blocks per batch (at most `len(blocks)`).
        seed: Seed of the order.
    """

    def __init__(self, blocks: TokenBlocks, batch_size: int, seed: int = 0):
        if not 1 <= batch_size <= len(blocks):
            raise ConfigError(f"batch_size={batch_size} must be between 1 and the number of blocks "
                              f"({len(blocks)}); use a smaller batch_size or more data.")
        self.blocks, self.batch_size, self.seed = blocks, batch_size, seed
        self.epoch, self.position = 0, 0  # position = batches already yielded in this epoch
        self._order: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.blocks) // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """The block permutation of `epoch`, shape (len(blocks),)."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> torch.Tensor:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self.order(self.epoch)
        start = self.position * self.batch_size
        self.position += 1
        return self.blocks.batch(self._order[start:start + self.batch_size])  # (B, T+1)

    def state_dict(self) -> dict:
        """Where the iteration stands: epoch, position, and what the order depends on."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "num_blocks": len(self.blocks)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the next batch is the one the saved iterator would yield."""
        mine = self.state_dict()
        for key in ("batch_size", "num_blocks"):
            if state[key] != mine[key]:
                raise ConfigError(f"cannot resume: the saved iterator had {key}={state[key]} but this one "
                                  f"has {mine[key]}; resume with the same data and batch_size.")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = None
