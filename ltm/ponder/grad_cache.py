"""A differentiable, growable key/value cache with the interface `Decoder.hidden_states` uses.

`ltm.models.kv_cache.KVCache` writes into preallocated buffers in place, which autograd cannot
differentiate through across several forward calls. `ConcatKVCache` instead keeps the keys and
values of each layer as a list of chunks and concatenates them on read, so gradients flow from a
later pass into the keys and values written by an earlier one (training of the level-by-level
families, Coconut's thought segments), at the cost of one concatenation per layer and call;
`truncate` drops the slots from a position on, so a segment can be run again.
"""

from __future__ import annotations

import torch


class ConcatKVCache:
    """Keys and values per layer, appended chunk by chunk and differentiable.

    Args:
        n_layer: Number of decoder layers.
    """

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer  # each (B, H, S, hd)
        self.values: list[torch.Tensor | None] = [None] * n_layer  # each (B, H, S, hd)
        self.length = 0

    def check_room(self, new: int) -> None:
        """Always room: the cache grows."""

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's keys and values (B, H, T, hd); return all so far (B, H, S, hd)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, H, S, hd)
            v = torch.cat([self.values[layer], v], dim=2)  # (B, H, S, hd)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, n: int) -> None:
        """Mark n more slots as filled (called once per forward)."""
        self.length += n

    def truncate(self, length: int) -> None:
        """Keep only the first `length` slots (a view: the graph of what is kept is unchanged)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} slots to {length}.")
        self.keys = [None if k is None else k[:, :, :length] for k in self.keys]
        self.values = [None if v is None else v[:, :, :length] for v in self.values]
        self.length = length
