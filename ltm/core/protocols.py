"""What the inference layer needs of a model family, as a `typing.Protocol`.

`ltm.models.Family` (every registered family) satisfies it; inference code (guides, the inner
loop, the dual-rate optimiser, the bounds) types its `family` arguments with it, so that "go to
definition" leads to the contract without `inference/` importing the model layer above it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ModelFamily(Protocol):
    """A model family as the inference layer uses it (see `ltm.models.Family` for the whole
    interface).

    Attributes:
        prior: The prior over the thoughts (an `ltm.priors.Prior`).
        exact_nll: True when every thought is deterministic, so -ELBO is the exact NLL.
        sequence_latent: True when the decoder conditions on a sequence-level z (B, N, D).
        training: The `nn.Module` training flag.
    """

    prior: nn.Module
    exact_nll: bool
    sequence_latent: bool
    training: bool

    def model(self, tokens: torch.Tensor) -> Any:
        """The Pyro program over blocks `tokens` (B, T+1): the thoughts, then tokens[:, 1:]."""

    def initial_latents(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """A point guess of the thoughts, for guides that start from the model's own guess."""

    def full_logits(self, tokens: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Exact next-token logits (B, T, V) of `tokens` (B, T)."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, nn.Parameter]]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
