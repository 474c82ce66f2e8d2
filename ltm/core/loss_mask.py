"""Targets left out of the loss, carried inside a block of token ids.

A block (B, T+1) feeds ids[:, :-1] to the model and scores ids[:, 1:]. A task may leave some targets
unscored: a reasoning question is given to the model, not asked of it (`mask=question`). Such an id
is stored as `id - MASK_SHIFT` (a large negative number), so one tensor still says both which id the
model reads there and that the id is not a target. Every family splits its blocks with
`split_block`; a block without masked ids (all prose) splits exactly as `tokens[:, :-1],
tokens[:, 1:]`. An id read without `block_ids` is negative and fails loudly in an embedding.

    blocks = mask_targets(ids, masked)      # (B, T+1), masked: (B, T+1) bool
    inputs, targets = split_block(blocks)   # targets IGNORE_INDEX where masked
"""

from __future__ import annotations

import torch

from ltm.core.sites import IGNORE_INDEX

MASK_SHIFT = 1 << 40  # a masked id v is stored as v - MASK_SHIFT
_MASKED_BELOW = -(MASK_SHIFT >> 1)  # stored values below this are masked ids (IGNORE_INDEX is not)


def mask_targets(ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """`ids` (int64, non-negative) with the entries where `masked` is True marked as unscored."""
    return torch.where(masked, ids - MASK_SHIFT, ids)


def is_masked(tokens: torch.Tensor) -> torch.Tensor:
    """Bool, the shape of `tokens`: which entries are masked (unscored) ids."""
    return tokens < _MASKED_BELOW


def block_ids(tokens: torch.Tensor) -> torch.Tensor:
    """The token ids of a block, masked ones read back (IGNORE_INDEX entries are left as they are)."""
    return torch.where(is_masked(tokens), tokens + MASK_SHIFT, tokens)


def split_block(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (B, T), of blocks (B, T+1); masked targets become IGNORE_INDEX."""
    ids = block_ids(tokens)  # (B, T+1)
    targets = ids[:, 1:].masked_fill(is_masked(tokens[:, 1:]), IGNORE_INDEX)  # (B, T)
    return ids[:, :-1], targets


def scored_targets(tokens: torch.Tensor) -> torch.Tensor:
    """How many targets of each block (B, T+1) count in the loss: (B,), neither masked nor padding
    marked IGNORE_INDEX."""
    return split_block(tokens)[1].ne(IGNORE_INDEX).sum(-1)  # (B,)
