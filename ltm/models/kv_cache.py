"""Key/value cache for incremental decoding: one preallocated buffer per layer."""

from __future__ import annotations

import torch

from ltm.core.errors import DataError


class KVCache:
    """Keys and values of every self-attention layer for the positions decoded so far.

    Args:
        n_layer: Number of layers.
        batch_size: Sequences decoded together.
        n_head: Attention heads.
        head_dim: Width of one head.
        max_len: Most slots the cache can hold.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H, S, hd)
        self.values = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H, S, hd)
        self.length = 0
        self.max_len = max_len

    def check_room(self, new: int) -> None:
        """Raise if `new` more slots do not fit."""
        if self.length + new > self.max_len:
            raise DataError(
                f"KV cache holds {self.max_len} slots and {self.length} are used; {new} more do not "
                f"fit. Create the cache with a larger max_len.")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys and values (B, H, T, hd) and return all so far (B, H, S, hd)."""
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Mark n more slots as filled (called once per forward, after every layer wrote)."""
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows in `index` (for beam-like or filtered decoding)."""
        self.keys = self.keys[:, index]
        self.values = self.values[:, index]
