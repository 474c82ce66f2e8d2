"""The (token, step) grid of adaptive latent CoT: its attention mask and a KV cache over slots.

A slot is (t, k): token t at latent step (level) k. Slot (t, k) may read slot (t', k') iff
t' <= t and k' <= k, and (t', k') was computed (not pruned). Every slot of token t has position
id t. The cache keeps the keys/values of every computed slot in the order they were written
(level by level for a prompt, token by token when decoding), with each slot's position, level and
validity; the mask is built from those, so the write order does not matter.
"""

from __future__ import annotations

import torch


def grid_mask(q_pos: torch.Tensor, q_level: int, k_pos: torch.Tensor, k_level: torch.Tensor,
              k_valid: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
    """Which slots the queries of one level may read.

    Args:
        q_pos: Token positions of the queries (T,), all at level `q_level`.
        q_level: Level k of the queries.
        k_pos: Token positions of the keys (S,).
        k_level: Levels of the keys (S,).
        k_valid: Keys that were computed (B, S) (False: pruned, masked out); None: all.
        window: Sliding window in tokens (query sees positions within the window), None: full.

    Returns:
        Bool mask (T, S), or (B, 1, T, S) with `k_valid`; True = may attend.
    """
    mask = (k_pos[None, :] <= q_pos[:, None]) & (k_level[None, :] <= q_level)  # (T, S)
    if window is not None:
        mask &= q_pos[:, None] - k_pos[None, :] < window
    if k_valid is None:
        return mask
    return mask[None, None] & k_valid[:, None, None, :]  # (B, 1, T, S)


def level_major_mask(n_tokens: int, level: int) -> torch.Tensor:
    """Mask (T, (k+1) T) of level k's queries over levels 0..k stored level-major (no pruning)."""
    t = torch.arange(n_tokens)
    k_pos = t.repeat(level + 1)  # ((k+1) T,)
    k_level = torch.arange(level + 1).repeat_interleave(n_tokens)  # ((k+1) T,)
    return grid_mask(t, level, k_pos, k_level)


class GridCache:
    """A KV cache over grid slots plus each slot's position, level and validity.

    Args:
        kv: The key/value store handed to `Decoder.hidden_states` (`KVCache` for decoding,
            `ConcatKVCache` for differentiable training passes).
        batch_size: Rows B.
        device: Device of the metadata.
    """

    def __init__(self, kv, batch_size: int, device: torch.device | str = "cpu"):
        self.kv = kv
        self.pos = torch.zeros(0, dtype=torch.long, device=device)  # (S,)
        self.level = torch.zeros(0, dtype=torch.long, device=device)  # (S,)
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)  # (B, S)

    def extend(self, positions: torch.Tensor, level: int, active: torch.Tensor,
               window: int | None = None) -> torch.Tensor:
        """Register T new slots (t, level) and return their mask (B, 1, T, S + T).

        Args:
            positions: Token positions of the new slots (T,).
            level: Their level k.
            active: Which of them are computed (B, T); inactive ones are masked out for everyone.
            window: Sliding window in tokens, None: full.
        """
        self.pos = torch.cat([self.pos, positions])  # (S+T,)
        self.level = torch.cat([self.level, positions.new_full(positions.shape, level)])  # (S+T,)
        self.valid = torch.cat([self.valid, active], dim=1)  # (B, S+T)
        return grid_mask(positions, level, self.pos, self.level, self.valid, window)
