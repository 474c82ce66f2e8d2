"""The (token, step) grid of adaptive latent CoT: its attention mask, a KV cache over slots, and
the packing of a level's active slots.

A slot is (t, k): token t at latent step (level) k. Slot (t, k) may read slot (t', k') iff
t' <= t and k' <= k, and (t', k') was computed (not pruned). Every slot of token t has position
id t. The cache keeps the keys/values of every computed slot in the order they were written
(level by level for a prompt, token by token when decoding), with each slot's position (per row),
level and validity; the mask is built from those, so the write order does not matter.

A partly active level is run packed (`packed_hidden_states`): the token-wise work (projections,
MLP, norms) runs on its n active slots alone, flattened over the batch; only attention, which
reads a row's own cache, lays them out per row on N = the most active tokens of any row
(`pack_index`), padding rows with fewer active tokens with slots that are written to the cache as
invalid and whose outputs are dropped.
"""

from __future__ import annotations

import torch

from ltm.models.attention import Cells


def grid_mask(q_pos: torch.Tensor, q_level: int, k_pos: torch.Tensor, k_level: torch.Tensor,
              k_valid: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
    """Which slots the queries of one level may read.

    Args:
        q_pos: Token positions of the queries (T,) or per row (B, T), all at level `q_level`.
        q_level: Level k of the queries.
        k_pos: Token positions of the keys (S,) or per row (B, S).
        k_level: Levels of the keys (S,).
        k_valid: Keys that were computed (B, S) (False: pruned, masked out); None: all.
        window: Sliding window in tokens (query sees positions within the window), None: full.

    Returns:
        Bool mask (T, S) when every input is shared by the rows, else (B, 1, T, S); True = may attend.
    """
    q, key = q_pos[..., :, None], k_pos[..., None, :]  # (T, 1) or (B, T, 1); (1, S) or (B, 1, S)
    mask = (key <= q) & (k_level <= q_level)  # (T, S) or (B, T, S)
    if window is not None:
        mask = mask & (q - key < window)
    if k_valid is not None:
        mask = mask & k_valid[:, None, :]  # (B, T, S)
    return mask if mask.dim() == 2 else mask[:, None]  # (T, S) or (B, 1, T, S)


def pack_index(active: torch.Tensor) -> torch.Tensor:
    """Per row, the tokens of a level laid out for attention, active ones first in token order.

    Args:
        active: Which tokens of the level are computed (B, T), bool.

    Returns:
        Token indices (B, N), N = the most active tokens of any row; a row with fewer active
        tokens is padded with its first inactive ones (their level-0 slots are valid, so a padded
        query always has a key to read).
    """
    n = int(active.sum(1).max())
    return torch.sort(~active, dim=1, stable=True).indices[:, :n]  # (B, N)


def packed_hidden_states(decoder, x: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor,
                         cache, attn_mask: torch.Tensor) -> torch.Tensor:
    """Final-norm states (n, D) of n active slots: `Decoder.hidden_states` with the token-wise work
    on the active slots only (attention lays them out per row, `ltm.models.attention.Cells`).

    Args:
        decoder: A `Decoder` without cross-attention.
        x: Inputs of the active slots (n, D), in row-major order of `slots`.
        slots: Which cells of the (B, N) attention layout hold an active slot (B, N); n of them.
        positions: Token positions of the layout's cells (B, N).
        cache: KV cache of the lower levels (appended to: N slots per row, padding included).
        attn_mask: Bool mask (B, 1, N, S) of the layout's queries over the cache after appending.
    """
    cache.check_room(slots.shape[1])
    cells = Cells(slots.nonzero(as_tuple=True), tuple(slots.shape))  # n cells of (B, N)
    cos = decoder.rope_cos[positions][:, None]  # (B, 1, N, hd/2)
    sin = decoder.rope_sin[positions][:, None]  # (B, 1, N, hd/2)
    x = decoder.run_blocks(x, cos=cos, sin=sin, mask=attn_mask, is_causal=False, cache=cache,
                           cells=cells)  # (n, D)
    cache.advance(slots.shape[1])
    return decoder.norm(x)  # (n, D)


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
        self.pos = torch.zeros(batch_size, 0, dtype=torch.long, device=device)  # (B, S)
        self.level = torch.zeros(0, dtype=torch.long, device=device)  # (S,)
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)  # (B, S)

    def extend(self, positions: torch.Tensor, level: int, active: torch.Tensor,
               window: int | None = None) -> torch.Tensor:
        """Register T new slots (t, level) per row and return their mask (B, 1, T, S + T).

        Args:
            positions: Token positions of the new slots, shared (T,) or per row (B, T).
            level: Their level k.
            active: Which of them are computed (B, T); inactive ones are masked out for everyone.
            window: Sliding window in tokens, None: full.
        """
        positions = positions.expand_as(active)  # (B, T)
        self.pos = torch.cat([self.pos, positions], dim=1)  # (B, S+T)
        self.level = torch.cat([self.level, self.level.new_full(positions.shape[1:], level)])  # (S+T,)
        self.valid = torch.cat([self.valid, active], dim=1)  # (B, S+T)
        return grid_mask(positions, level, self.pos, self.level, self.valid, window)
