"""Per-row random streams: what makes sampling reproducible and independent of batching.

Reproducibility rule: the row at index i of a request (rows in prompt-major order) is row
r = first_row + i, and draws all its randomness from two CPU `torch.Generator`s of its own, never
from the global RNG. Stream s of row r is seeded with

    row_seed(seed, r, s) = ((seed * 1_000_003 + r) * 2 + s) mod 2**63

where s = TOKEN_STREAM (0) gives one uniform per decoding step, and s = LATENT_STREAM (1) gives the
inner loop's noise draw (N, D) and then the noise (N, D) of the final draw of z. So output is a pure
function of (model, prompts, config, seed), and row i of a batched call equals a one-row call with
`first_row=i` (same seed).
"""

from __future__ import annotations

import torch

TOKEN_STREAM = 0  # one uniform per row per decoding step
LATENT_STREAM = 1  # the inner loop's noise draw, then the draw of z from q (or from the prior)
_SEED_STRIDE = 1_000_003

def row_seed(seed: int, row: int, stream: int) -> int:
    """The seed of one row's random stream (see the module docstring)."""
    return ((seed * _SEED_STRIDE + row) * 2 + stream) % 2**63


def row_generators(seed: int, first_row: int, n: int, stream: int) -> list[torch.Generator]:
    """CPU generators of rows first_row .. first_row + n - 1 for one stream."""
    return [torch.Generator().manual_seed(row_seed(seed, first_row + i, stream)) for i in range(n)]


def row_normals(generators: list[torch.Generator], shape: tuple[int, ...],
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One standard-normal draw of `shape` per row, stacked: (B, *shape)."""
    draws = [torch.randn(shape, generator=g) for g in generators]
    return torch.stack(draws).to(device=device, dtype=dtype)  # (B, *shape)
