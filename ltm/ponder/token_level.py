"""What the token-level families share: their Pyro program and their side of the `Family` interface.

A token-level family (vanilla, PonderLM-2, pause tokens, looped decoder, ...) predicts token t+1
from the tokens up to t and, for the pondering families, from latent thoughts that are a
deterministic function of that context. As a Pyro program (`model(tokens)`):

    with plate("sequences", B):
        thoughts = deterministic("thoughts", f(context))   # Delta: the degenerate prior
        sample("tokens", TokenSequence.from_hidden(h, E), obs=next_tokens)  # logits h @ E.T

The prior is `ContextDelta` (a Delta at the thought's deterministic value) and the guide is the
empty guide (`EmptyGuide`, registry name "none"): nothing is sampled, the KL is exactly zero and
the ELBO is the summed token log-likelihood. `DualRateOptimizer` trains every family unchanged
(its inner loop does nothing; its slow step minimises the summed cross-entropy).

A subclass implements the training path, `exact_logits` (the exact path without a KV cache),
`start_decode` (prompt into a fresh cache) and `decode_step`; this base gives the `Family` methods
`full_logits` and `prefill`, which refuse sequence-level latents. The training path is either
`train_hidden` (final hidden states that the tied embedding maps to logits; set `tied_head = True`:
the likelihood is then the fused cross-entropy, which never holds the (B, T, V) logits) or
`train_logits` (any other head: the likelihood scores the full logits).
"""

from __future__ import annotations

from typing import ClassVar

import pyro
import torch

from ltm.core.errors import ConfigError, DataError
from ltm.core.loss_mask import split_block
from ltm.core.sites import SEQUENCE_PLATE, THOUGHT_SITE, TOKEN_SITE
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState, Family
from ltm.models.likelihood import TokenSequence
from ltm.priors import ContextDelta


class TokenLevelFamily(Family):
    """Base of the token-level families: the Pyro program, length checks, the decode contract.

    Args:
        decoder: A `Decoder` without cross-attention (n_latent == 0).

    Attributes:
        decoder: The decoder.
        prior: `ContextDelta(1, d_model)`: documents the degenerate prior of the thoughts.
        slots_per_token: Decoder slots a token costs at decode time (the stated decode cost of
            slot-based families; a looped decoder states its loops instead).
        tied_head: True when the training logits are the tied embedding over `train_hidden`, so
            the likelihood is the fused cross-entropy; False: `train_logits` is scored as is.
    """

    slots_per_token: int = 1
    tied_head: ClassVar[bool] = False

    def __init__(self, decoder: Decoder):
        super().__init__()
        if decoder.cfg.n_latent != 0:
            raise ConfigError(f"{type(self).__name__} needs a decoder without cross-attention "
                              f"(n_latent=0), got n_latent={decoder.cfg.n_latent}.")
        self.decoder = decoder
        self.prior = ContextDelta(1, decoder.cfg.d_model)

    @property
    def cost_per_token(self) -> float:
        return float(self.slots_per_token)

    def check_length(self, n_tokens: int) -> None:
        """Raise if `n_tokens` positions do not fit the decoder's block_size."""
        if n_tokens > self.decoder.cfg.block_size:
            raise DataError(f"{n_tokens} tokens exceed the decoder's block_size "
                            f"{self.decoder.cfg.block_size}; shorten the input.")

    # -- what a subclass implements -----------------------------------------------------------------

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training-path final hidden states (B, T, D) of `inputs` (B, T), which the tied embedding
        maps to the logits, and the thoughts (B, T, K, D) or None (families with `tied_head`)."""
        raise NotImplementedError

    def train_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training-path logits (B, T, V) of `inputs` (B, T) and the thoughts (B, T, K, D) or None.

        Default: the tied head over `train_hidden`; a family with another head overrides this.
        """
        h, thoughts = self.train_hidden(inputs)  # (B, T, D), (B, T, K, D) or None
        return self.decoder.logits(h), thoughts  # (B, T, V)

    def train_likelihood(self, inputs: torch.Tensor) -> tuple[TokenSequence, torch.Tensor | None]:
        """The training-path token likelihood of `inputs` (B, T) and the thoughts (B, T, K, D) or None:
        fused over `train_hidden` with a `tied_head`, else over the full `train_logits`."""
        if self.tied_head:
            h, thoughts = self.train_hidden(inputs)  # (B, T, D)
            return TokenSequence.from_hidden(h, self.decoder.head_weight), thoughts
        logits, thoughts = self.train_logits(inputs)  # (B, T, V)
        return TokenSequence(logits), thoughts

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Exact next-token logits (B, T, V) of `tokens` (B, T), without a KV cache."""
        raise NotImplementedError

    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, DecodeState]:
        """Run the prompt `tokens` (B, P) into a fresh cache sized for `max_len` tokens (default:
        block_size); return the last position's logits (B, V) and the state."""
        raise NotImplementedError

    # -- the Family interface ---------------------------------------------------------------------

    def full_logits(self, tokens: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        self.refuse_latents(latents)
        return self.exact_logits(tokens)

    def prefill(self, tokens: torch.Tensor, max_len: int | None = None,
                latents: torch.Tensor | None = None) -> tuple[torch.Tensor, DecodeState]:
        self.refuse_latents(latents)
        return self.start_decode(tokens, max_len)

    def model(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Pyro model over blocks `tokens` (B, T+1): predicts tokens[:, 1:] from tokens[:, :-1].

        Returns:
            The thoughts (B, T, K, D), or None for a family without thoughts.
        """
        inputs, targets = split_block(tokens)  # (B, T) each
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            likelihood, thoughts = self.train_likelihood(inputs)  # thoughts (B, T, K, D) or None
            if thoughts is not None:  # Delta at f(context): q = p, zero KL, zero log-density
                pyro.deterministic(THOUGHT_SITE, thoughts, event_dim=thoughts.dim() - 1)
            pyro.sample(TOKEN_SITE, likelihood, obs=targets)
        return thoughts

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Training-path next-token logits (B, T, V) of `inputs` (B, T)."""
        return self.train_logits(inputs)[0]
