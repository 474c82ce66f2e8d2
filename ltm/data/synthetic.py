"""Synthetic "topic" corpora: each sequence comes from one of a few hidden Markov chains.

A decoder that sees only a short window must infer the chain from a few tokens (it learns to, given
enough training); a sequence-level latent can carry the topic for the whole sequence.
Used by tests, notebooks and benchmarks.
"""

from __future__ import annotations

import torch


class TopicMarkovChains:
    """`num_topics` first-order Markov chains over `vocab_size` tokens, fixed by `seed`.

    Args:
        num_topics: Hidden topics (chains).
        vocab_size: Token ids 0..vocab_size-1.
        concentration: Dirichlet concentration of each transition row (small = peaked, distinct).
        seed: Seed of the chains themselves (not of the samples).
    """

    def __init__(self, num_topics: int = 4, vocab_size: int = 32, concentration: float = 0.1,
                 seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        alpha = torch.full((vocab_size,), concentration)
        gamma = torch._standard_gamma(alpha.expand(num_topics, vocab_size, vocab_size).contiguous(),
                                      generator=g)
        self.transitions = gamma / gamma.sum(-1, keepdim=True)  # (topics, V, V)
        self.num_topics, self.vocab_size = num_topics, vocab_size

    def sample(self, n: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n sequences of `length` tokens; returns (tokens (n, length), topics (n,))."""
        g = torch.Generator().manual_seed(seed)
        topics = torch.randint(self.num_topics, (n,), generator=g)  # (n,)
        tokens = torch.empty(n, length, dtype=torch.long)
        tokens[:, 0] = torch.randint(self.vocab_size, (n,), generator=g)
        for t in range(1, length):
            rows = self.transitions[topics, tokens[:, t - 1]]  # (n, V)
            tokens[:, t] = torch.multinomial(rows, 1, generator=g).squeeze(1)
        return tokens, topics

    def entropy_rate(self) -> float:
        """Mean per-token conditional entropy (nats) when the topic is known: a floor for any model."""
        p = self.transitions
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
