"""The amortised encoder: token ids (or their embeddings) to the parameters of a Gaussian q(z | x)."""

from __future__ import annotations

import torch
from torch import nn

from ltm.core.errors import ConfigError, DataError
from ltm.core.loss_mask import block_ids
from ltm.core.sites import IGNORE_INDEX

LOG_SCALE_RANGE = (-7.0, 3.0)  # keeps exp(log_scale) finite for any encoder output


class SequenceEncoder(nn.Module):
    """A bidirectional GRU over the block, mean-pooled, then a linear map to (loc, log_scale).

    The output layer starts near zero (weights of std 0.01, zero bias), so an untrained encoder
    gives q close to N(0, I): the standard prior, where ltm starts every local posterior.
    `encode_embeddings` takes continuous inputs too, so a VampPrior can run the encoder on
    learned pseudo-inputs.

    Args:
        vocab_size: Token vocabulary V.
        num_latents: Latent vectors N.
        latent_dim: Latent width D.
        dim: Embedding and hidden width E of the encoder.
    """

    def __init__(self, vocab_size: int, num_latents: int, latent_dim: int, dim: int = 64):
        super().__init__()
        if min(vocab_size, num_latents, latent_dim, dim) < 1:
            raise ConfigError(f"SequenceEncoder: vocab_size, num_latents, latent_dim and dim must be "
                              f">= 1, got {vocab_size}, {num_latents}, {latent_dim}, {dim}.")
        self.vocab_size, self.dim = vocab_size, dim
        self.event_shape = (num_latents, latent_dim)
        self.embed = nn.Embedding(vocab_size, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * dim, 2 * num_latents * latent_dim)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, log_scale), each (B, N, D), of q(z | tokens) for token ids (B, T)."""
        tokens = block_ids(tokens)  # (B, T): ids whose targets a task masks are read as ids
        mask = tokens != IGNORE_INDEX  # (B, T)
        if mask.any() and int(tokens[mask].max()) >= self.vocab_size:
            raise DataError(f"token id {int(tokens[mask].max())} is outside the encoder's vocabulary "
                            f"of {self.vocab_size}; build the guide with the run's vocab_size.")
        return self.encode_embeddings(self.embed(tokens.clamp(min=0)), mask)  # embed: (B, T, E)

    def encode_embeddings(self, h: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, log_scale), each (B, N, D), for input embeddings h (B, T, E), padding masked out."""
        states, _ = self.rnn(h)  # (B, T, 2E)
        if mask is None:
            pooled = states.mean(1)  # (B, 2E)
        else:
            w = mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
            pooled = (states * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, 2E)
        loc, log_scale = self.out(pooled).view(-1, 2, *self.event_shape).unbind(1)  # (B, N, D) each
        return loc, log_scale.clamp(*LOG_SCALE_RANGE)
