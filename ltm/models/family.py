"""The interface every model family implements: the trainer, the sampler and the evaluator use
nothing else, so a new family is one file plus one line in `ltm.families.FAMILIES`.

A family is a Pyro program over blocks of tokens (`model(tokens)`) with a `prior` over its
thoughts, plus what the tools around it need to know:

| member | used by | says |
|---|---|---|
| `name`, `Options` | config, registry | its config section: `name` is the key, `Options` the dataclass |
| `from_config` | trainer, checkpoints | how to build it from the shared decoder shape and its options |
| `default_guide` | trainer, sampler | the guide it is trained with when the user names none |
| `exact_nll` | evaluator | whether -ELBO is its exact NLL (true when no thought is stochastic) |
| `sequence_latent` | sampler | whether the decoder conditions on a sequence-level z drawn first |
| `full_logits`, `prefill`, `decode_step` | sampler, bounds | next-token logits: no cache / KV cache |
| `initial_latents` | inner loop | a point guess of the thoughts that guides may start from |
| `metrics` | trainer | extra numbers it logs after each step |
| `cost_per_token` | benchmarks | its stated decode cost per token, as a multiple of vanilla |
| `pretrained_names` | trainer | which parameters a pretrained decoder gives (`--freeze`, `--slow.new-lr`) |
| `fsdp_refusal` | config | why `--fsdp` cannot shard it with given options (None: it can) |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ltm.core.errors import ConfigError
from ltm.models.config import DecoderConfig
from ltm.models.decoder import Decoder
from ltm.models.hf_format import pretrained_names


@dataclass
class NoOptions:
    """The config section of a family without options of its own."""


@dataclass
class DecodeState:
    """Where incremental decoding of a batch stands.

    Attributes:
        cache: The KV cache (slots decoded so far), or whatever the family keeps.
        position: Tokens consumed so far (the position id of the next token).
        latents: Sequence-level thoughts (B, N, D) the decoder conditions on, or None.
    """

    cache: Any
    position: int
    latents: torch.Tensor | None = None


class Family(nn.Module):
    """Base class of the model families (see the module docstring for the whole contract).

    Attributes:
        name: Registry name and config-section key (`--model NAME`, `NAME:` in a config file).
        Options: Dataclass of the family's own options (its config section).
        default_guide: Guide (registry name, `module:Class` path or class) used when none is named.
        exact_nll: True when every thought is deterministic, so -ELBO is the exact NLL.
        sequence_latent: True when the decoder conditions on a sequence-level z (B, N, D): the
            sampler fits q(z | prompt) or draws z from the prior and passes it as `latents`.
        takes_prior: True when the prior can be chosen (`--prior`); else the family has its own.
        is_baseline: True for the plain decoder (no thought, no extra compute) that comparisons
            build their controls from (`ltm.eval.controls`); one family has it.
        recomputes_blocks: True when activation checkpointing can recompute the decoder's blocks
            in the backward pass (`--activation-checkpointing`); False for a family whose training
            pass appends to a KV cache, which a recomputation would append to again.
        decoder: The `Decoder` whose vocabulary, block size and device the tools read.
        prior: The prior over the thoughts (a degenerate `ContextDelta` for deterministic ones).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_guide: ClassVar[str | type] = "none"
    exact_nll: ClassVar[bool] = True
    sequence_latent: ClassVar[bool] = False
    takes_prior: ClassVar[bool] = False
    is_baseline: ClassVar[bool] = False
    recomputes_blocks: ClassVar[bool] = True

    @classmethod
    def from_config(cls, decoder: DecoderConfig, options=None, prior: str | type | None = None,
                    prior_kwargs: dict | None = None) -> Family:
        """Build the family from the shared decoder shape, its options and (where it takes one) a prior.

        The default builds `cls(Decoder(decoder), **options)`: override it for anything else.

        Raises:
            ConfigError: a prior was named for a family that has its own.
        """
        cls.refuse_prior(prior, prior_kwargs)
        options = cls.Options() if options is None else options
        return cls(Decoder(decoder), **dataclasses.asdict(options))

    @classmethod
    def fsdp_refusal(cls, options) -> str | None:
        """Why `--fsdp` cannot shard this family with `options` (a clause naming the option and
        what to do instead), or None when it can. FSDP all-gathers a block's weights in every call
        of it, a collective: every rank must run the same blocks the same number of times, so a
        family whose graph depends on the data (not just its shape) cannot be sharded."""
        return None

    @classmethod
    def refuse_prior(cls, prior, prior_kwargs) -> None:
        """Raise a ConfigError when a prior is named for a family whose prior is fixed."""
        if not cls.takes_prior and (prior is not None or prior_kwargs):
            raise ConfigError(f"model '{cls.name}' has its own prior over its thoughts; --prior and "
                              f"--prior-kwargs do not apply to it (its options are in its "
                              f"'{cls.name}' config section).")

    # -- the Pyro program ---------------------------------------------------------------------------

    def model(self, tokens: torch.Tensor):
        """Pyro model over blocks `tokens` (B, T+1): the thoughts, then tokens[:, 1:] observed."""
        raise NotImplementedError

    def initial_latents(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """A point guess of the thoughts of `tokens` (B, T+1) for guides that start from the model
        (`LocalGuide.starts_from_model`); None: the family has none."""
        return None

    # -- next-token logits for the sampler and the bounds ----------------------------------------

    def full_logits(self, tokens: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Exact next-token logits (B, T, V) of `tokens` (B, T), without a KV cache.

        Args:
            latents: The sequence-level thoughts (B, N, D) of a `sequence_latent` family; None else.
        """
        raise NotImplementedError

    def prefill(self, tokens: torch.Tensor, max_len: int | None = None,
                latents: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """Run the prompt `tokens` (B, P) into a fresh cache sized for `max_len` tokens (default:
        block_size); return the last position's logits (B, V) and the decoding state."""
        raise NotImplementedError

    def decode_step(self, token: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
        """Feed one token per row (B,); return the next-token logits (B, V) and the state."""
        raise NotImplementedError

    def check_tokenizer(self, tokenizer) -> None:
        """Raise a ConfigError when the family's token ids (special slots) disagree with the
        tokenizer it is trained with; the default checks nothing."""

    def refuse_latents(self, latents: torch.Tensor | None) -> None:
        """Raise for sequence-level thoughts given to a family that has none to condition on."""
        if latents is not None:
            raise ConfigError(f"model '{self.name}' has no sequence-level latent to condition on; its "
                              f"thoughts are token-level. Score it with the fresh-noise ELBO or the "
                              f"importance-weighted bound instead.")

    def pretrained_names(self) -> set[str]:
        """Its parameters (as `named_parameters` names them) that a pretrained Llama-shaped decoder
        gives: the decoder's, but for the cross-attention to latents; the rest are new."""
        return {f"decoder.{name}" for name in pretrained_names(self.decoder.cfg)}

    # -- what the tools report -------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Numbers the trainer logs after each step, beyond loss, reconstruction and KL."""
        return {}

    @property
    def cost_per_token(self) -> float:
        """The family's stated decode cost per token, as a multiple of a vanilla decoder's."""
        return 1.0
