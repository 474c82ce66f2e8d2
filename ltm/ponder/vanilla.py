"""The vanilla decoder (family "vanilla") as a token-level Pyro program: the control of every comparison.

Prior: none in effect; `prior` is `ContextDelta(1, d_model)` only to document that this is the
degenerate case with no thought at all. Guide: the empty guide ("none"). Budget knob: none (one
decoder slot per token). The ELBO with the empty guide is the summed token cross-entropy.
"""

from __future__ import annotations

import torch

from ltm.models.family import DecodeState
from ltm.ponder.token_level import TokenLevelFamily


class VanillaDecoder(TokenLevelFamily):
    """p(x) = prod_t p(x_{t+1} | x_<=t): the plain decoder, no thoughts.

    Args:
        decoder: A `Decoder` with n_latent == 0.
    """

    name = "vanilla"
    is_baseline = True
    slots_per_token = 1
    tied_head = True

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.decoder.hidden_states(inputs), None  # (B, T, D)

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens)  # (B, T, V)

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, DecodeState]:
        cache = self.decoder.new_cache(tokens.shape[0], max_len)
        logits = self.decoder(tokens, cache=cache)[:, -1]  # (B, V)
        return logits, DecodeState(cache, tokens.shape[1])

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        self.check_length(state.position + 1)
        logits = self.decoder(token[:, None], cache=state.cache)[:, -1]  # (B, V)
        state.position += 1
        return logits, state
