"""Stochastic Coconut ("coconut_stochastic", beyond the paper): continuous thoughts with noise.

Prior: a thought slot's input z_t ~ N(h_{t-1}, sigma^2 I), h_{t-1} the last hidden state of the
position before it (Coconut's deterministic thought plus Gaussian noise of learned scale sigma),
autoregressive over the slots of a row (`CoconutNoisePrior`, `CoconutThoughtSequence`). As sigma
goes to 0 it is Coconut's Delta prior. Guide: a local Gaussian per thought slot, started at the
deterministic Coconut thoughts with scale sigma (`CoconutThoughtGuide`) and refined by the dual-rate
inner loop, like `ponderlm2_stochastic`'s.

The site "z" has event shape (T, D) per sequence, one entry per position; only the thought slots
(`<|thought|>` after the first position) are scored, by the prior and by the guide alike (a masked
density), so positions without a thought carry no KL and the model never reads them. Given z,
every slot's input is known, so the model needs a single decoder pass: it gives the prior's means
(the hidden state before each slot) and the logits. Decoding uses the prior means (sigma set to 0):
Coconut's exact KV-cached decode.

The thoughts live at the prior's scale sigma (0.1 at the start), so fit them with a fast step small
against it (`--inner.lr 0.01`, or `--inner.optimizer natgrad`); the default Adam step of 0.3 moves
a thought by many sigmas and the KL dominates. A chain of c noisy thoughts has a KL that grows with
c even at the guide's start: each thought's prior mean moves with the noise of the ones before it,
which a mean-field guide cannot follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ltm.core.errors import ConfigError, DataError
from ltm.core.loss_mask import split_block
from ltm.core.sites import IGNORE_INDEX, LATENT_SITE, SEQUENCE_PLATE, TOKEN_SITE
from ltm.inference.fixed_noise import normal
from ltm.inference.guides import LocalGaussianGuide
from ltm.models.config import DecoderConfig
from ltm.models.decoder import Decoder
from ltm.models.likelihood import TokenSequence
from ltm.ponder.coconut import Coconut, CoconutOptions
from ltm.ponder.ponderlm2_stochastic import ThoughtNoisePrior


@dataclass
class StochasticCoconutOptions(CoconutOptions):
    """The `coconut_stochastic` config section: `coconut`'s, and the prior's starting sigma.

    Attributes:
        init_sigma: Starting noise scale sigma of the prior (learned).
    """

    init_sigma: float = 0.1


class CoconutNoisePrior(ThoughtNoisePrior):
    """N(h before the slot, sigma^2 I) at each thought slot; knows the slot token to find the slots.

    Args:
        num_latents: Positions T per sequence (one entry each; only thought slots are scored).
        latent_dim: Thought width D (the decoder's d_model).
        thought_id: Token id of the `<|thought|>` slot.
        init_sigma: Starting sigma.
    """

    def __init__(self, num_latents: int, latent_dim: int, thought_id: int, init_sigma: float = 0.1):
        super().__init__(num_latents, latent_dim, init_sigma)
        self.thought_id = thought_id

    def slots(self, inputs: torch.Tensor) -> torch.Tensor:
        """Where the inputs (B, T) hold thought slots (B, T): never the first position."""
        slots = inputs == self.thought_id  # (B, T)
        slots[:, 0] = False
        return slots


def masked_normal(loc: torch.Tensor, scale: torch.Tensor, slots: torch.Tensor,
                  noise: torch.Tensor | None = None) -> dist.TorchDistribution:
    """N(loc, scale) over (B, T, D), its density summed over the slot positions (B, T) only:
    batch (B,), event (T, D)."""
    return normal(loc, scale, noise).to_event(1).mask(slots).to_event(1)


class CoconutThoughtSequence(dist.TorchDistribution):
    """The autoregressive prior over a batch's thought slots: batch (B,), event (T, D).

    `log_prob(z)` runs one decoder pass with z at the slots and scores each slot under N(hidden
    state before it, sigma^2); `sample()` draws the slots one rank at a time.

    Args:
        family: The `StochasticCoconut`.
        inputs: Token inputs (B, T).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, family: StochasticCoconut, inputs: torch.Tensor):
        self.family, self.inputs = family, inputs
        self.slots = family.prior.slots(inputs)  # (B, T)
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # (z, its hidden states), reused
        B, T = inputs.shape
        super().__init__(torch.Size((B,)), torch.Size((T, family.decoder.cfg.d_model)), validate_args=False)

    def states(self, z: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, D) with thoughts z (B, T, D) at the slots."""
        if self.hidden is None or self.hidden[0] is not z:
            self.hidden = (z, self.family.run_with(self.inputs, z))
        return self.hidden[1]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        h = self.states(value)  # (B, T, D)
        before = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)  # (B, T, D): mean of slot t
        return masked_normal(before, self.family.prior.sigma, self.slots).log_prob(value)  # (B,)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape != torch.Size():
            raise NotImplementedError("CoconutThoughtSequence draws one sample per sequence.")
        return self.family.prior_thoughts(self.inputs)


class CoconutThoughtGuide(LocalGaussianGuide):
    """Local Gaussian per thought slot, started at the deterministic Coconut thoughts
    (`StochasticCoconut.initial_latents`) with the prior's sigma as its scale; like the prior, it
    scores the slots only."""

    starts_from_model = True

    def __init__(self):
        super().__init__(init_scale=1.0)

    def init_locals(self, prior, tokens, start):
        if not isinstance(prior, CoconutNoisePrior) or start is None:
            raise ConfigError("CoconutThoughtGuide fits the thoughts of a coconut_stochastic model: reset "
                              "it with that model's prior and its initial_latents(tokens) as start.")
        return {"loc": start, "log_scale": torch.full_like(start, float(prior.log_sigma.detach()))}

    def distribution(self, tokens, prior):
        slots = prior.slots(split_block(tokens)[0])  # (B, T)
        return masked_normal(self.local("loc"), self.local("log_scale").exp(), slots, self.fixed_noise)


class StochasticCoconut(Coconut):
    """Coconut whose thoughts carry Gaussian noise of learned scale, inferred per thought slot.

    Args:
        decoder: A `Decoder` with n_latent == 0.
        seq_len: Tokens T per training sequence (the site's event shape (T, D)).
        thought_id: Token id of the thought slot.
        eot_id: Token id that ends a run of thoughts.
        init_sigma: Starting prior noise scale.
    """

    name = "coconut_stochastic"
    Options = StochasticCoconutOptions
    default_guide = CoconutThoughtGuide
    exact_nll = False

    def __init__(self, decoder: Decoder, seq_len: int, thought_id: int = 5, eot_id: int = 4,
                 init_sigma: float = 0.1):
        super().__init__(decoder, thought_id=thought_id, eot_id=eot_id)
        self.seq_len = seq_len
        self.prior = CoconutNoisePrior(seq_len, decoder.cfg.d_model, thought_id, init_sigma)

    @classmethod
    def from_config(cls, decoder: DecoderConfig, options: StochasticCoconutOptions | None = None,
                    prior=None, prior_kwargs=None) -> StochasticCoconut:
        """Sequences of block_size tokens (the site's event shape (T, D) is fixed by it)."""
        cls.refuse_prior(prior, prior_kwargs)
        options = options or StochasticCoconutOptions()
        return cls(Decoder(decoder), seq_len=decoder.block_size, thought_id=options.thought_id,
                   eot_id=options.eot_id, init_sigma=options.init_sigma)

    def run_with(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, D) of `inputs` (B, T) with thoughts z (B, T, D) at the slots."""
        self.check_length(inputs.shape[1])
        slots = self.prior.slots(inputs)[..., None]  # (B, T, 1)
        x = torch.where(slots, z, self.decoder.embed(inputs))  # (B, T, D)
        return self.decoder.hidden_states(embeds=x)  # (B, T, D)

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over blocks `tokens` (B, T+1), T <= seq_len: the thoughts z (B, T, D), then
        the tokens after each position except the thought slots and `<|eot|>` (placed by the data).

        Returns:
            The thoughts z (B, T, D).
        """
        inputs, targets = split_block(tokens)  # (B, T) each
        if inputs.shape[1] > self.seq_len:
            raise DataError(f"StochasticCoconut was built for sequences of at most {self.seq_len} tokens, "
                            f"got {inputs.shape[1]}.")
        placed = (targets == self.thought_id) | (targets == self.eot_id)  # (B, T)
        targets = targets.masked_fill(placed, IGNORE_INDEX)  # (B, T)
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            prior = CoconutThoughtSequence(self, inputs)
            z = pyro.sample(LATENT_SITE, prior)  # (B, T, D)
            h = prior.states(z)  # (B, T, D)
            pyro.sample(TOKEN_SITE, TokenSequence.from_hidden(h, self.decoder.head_weight), obs=targets)
        return z

    @torch.no_grad()
    def prior_thoughts(self, inputs: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """Thoughts (B, T, D) of `inputs` (B, T): `given` (B, T0, D) at the slots of the first T0
        positions, the later slots drawn from N(h before the slot, sigma^2) one rank at a time
        (zero where a position holds no thought)."""
        slots = self.prior.slots(inputs)  # (B, T)
        z = torch.zeros(*inputs.shape, self.decoder.cfg.d_model, device=inputs.device)  # (B, T, D)
        drawn = slots.clone()  # (B, T): slots still to draw
        if given is not None:
            z[:, :given.shape[1]] = given * slots[:, :given.shape[1], None]
            drawn[:, :given.shape[1]] = False
        rank = drawn.cumsum(1) * drawn  # (B, T): i for the i-th slot to draw of its row, else 0
        for i in range(1, int(rank.max()) + 1 if rank.numel() else 1):
            h = self.run_with(inputs, z)  # (B, T, D)
            before = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)  # (B, T, D)
            draw = before + self.prior.sigma * torch.randn_like(before)  # (B, T, D)
            z = torch.where((rank == i)[..., None], draw, z)
        return z

    def full_logits(self, tokens: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) of `tokens` (B, T).

        Args:
            latents: None: the prior-mean thoughts (sigma 0, as decoding uses). Else the thoughts
                (B, T0, D) of the first T0 <= T positions (a draw of q fitted on a prefix); the
                later slots are drawn from the prior given their context, so each call is one draw.
        """
        if latents is None:
            return super().full_logits(tokens)
        B, T = tokens.shape
        if latents.dim() != 3 or latents.shape[0] != B or latents.shape[1] > T \
                or latents.shape[2] != self.decoder.cfg.d_model:
            self.refuse_latents(latents)
        with torch.no_grad():
            return self.decoder.logits(self.run_with(tokens, self.prior_thoughts(tokens, latents)))

    @torch.no_grad()
    def initial_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """The guide's starting means (B, T, D): the deterministic Coconut thoughts (zero elsewhere)."""
        inputs = split_block(tokens)[0]  # (B, T)
        x, _ = self._filled(inputs)  # (B, T, D)
        return x * self.prior.slots(inputs)[..., None]
