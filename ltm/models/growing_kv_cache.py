"""A key/value cache whose keys and values stay in the autograd graph, so a training pass can run a
sequence in segments (Coconut's thought passes) and still backpropagate through every segment."""

from __future__ import annotations

import torch

from ltm.core.errors import DataError


class GrowingKVCache:
    """Keys and values of every self-attention layer, grown by concatenation (no in-place writes).

    Same interface as `KVCache` (`length`, `max_len`, `check_room`, `update`, `advance`), plus
    `truncate`: drop the slots from a position on, so a segment can be recomputed.

    Args:
        n_layer: Number of layers.
        max_len: Most slots the cache can hold (the model's block size).
    """

    def __init__(self, n_layer: int, max_len: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer  # each (B, KV, S, hd)
        self.values: list[torch.Tensor | None] = [None] * n_layer  # each (B, KV, S, hd)
        self.length = 0
        self.max_len = max_len

    def check_room(self, new: int) -> None:
        """Raise if `new` more slots do not fit."""
        if self.length + new > self.max_len:
            raise DataError(f"KV cache holds {self.max_len} slots and {self.length} are used; {new} more "
                            f"do not fit. Create the cache with a larger max_len.")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this segment's keys and values (B, KV, T, hd); return all so far (B, KV, S, hd)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], 2)  # (B, KV, S, hd)
            v = torch.cat([self.values[layer], v], 2)  # (B, KV, S, hd)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, n: int) -> None:
        """Mark n more slots as filled (called once per forward, after every layer wrote)."""
        self.length += n

    def truncate(self, length: int) -> None:
        """Keep only the first `length` slots (a view: the graph of what is kept is unchanged)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} slots to {length}.")
        self.keys = [None if k is None else k[:, :, :length] for k in self.keys]
        self.values = [None if v is None else v[:, :, :length] for v in self.values]
        self.length = length
