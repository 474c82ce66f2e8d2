"""A stochastic relaxation of PonderLM-2 ("ponderlm2_stochastic", beyond the paper): noisy thoughts.

Prior: thought z_t,k ~ N(h(slot before it), sigma^2 I) with a learned sigma: the PonderLM-2 thought
plus Gaussian noise, autoregressive over slots (`ThoughtNoisePrior`, `ThoughtSequence`). As sigma
goes to 0 it becomes PonderLM-2's Delta prior. Guide: a local Gaussian per token's thoughts,
q(z_t,k) = N(loc_t,k, scale_t,k^2), started at the Jacobi-solved PonderLM-2 thoughts with scale
sigma (`ThoughtGuide`) and refined by the dual-rate inner loop. Budget knobs: thoughts K, inner
steps (fast loop) and, for the guide's starting point, Jacobi sweeps J.

Given the thoughts, every slot's input is known, so the model needs a single decoder pass: the same
pass gives the prior's means (the hidden state before each thought slot) and the logits. The site
is "z" with event shape (T*K, D) per sequence (T = the training block length), so the generic
local guides and the dual-rate optimiser apply unchanged. Decoding uses the prior means (sigma
set to 0), i.e. PonderLM-2's exact sequential decode.

Prefix-predictive scoring (`ltm.inference.bounds`, `ltm.eval.scoring`) fits q on a prefix of P
tokens, i.e. on the thoughts of its first P-1 tokens (the model accepts blocks shorter than the
training length), and passes a draw of them as `latents` to `full_logits`. The continuation's
thoughts (those of tokens P-1 ... T-1) have no fitted q: `full_logits` draws them from the prior
given their context, slot by slot, conditioned on the scored tokens. One call then gives
p(c | prefix, z_prefix, z_rest) with z_rest ~ p(z_rest | prefix, z_prefix, c): an unbiased estimate
of p(c | prefix, z_prefix), so the S-draw mixture is an unbiased estimate of the q-predictive
E_q[p(c | prefix, z_prefix)], as for a sequence-level latent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from ltm.core.errors import ConfigError, DataError
from ltm.core.loss_mask import split_block
from ltm.core.sites import LATENT_SITE, SEQUENCE_PLATE, TOKEN_SITE
from ltm.inference.guides import LocalGaussianGuide
from ltm.models.config import DecoderConfig
from ltm.models.decoder import Decoder
from ltm.models.likelihood import TokenSequence
from ltm.ponder.ponderlm2 import PonderLM2
from ltm.priors import Prior


@dataclass
class StochasticPonderLM2Options:
    """The `ponderlm2_stochastic` config section.

    Attributes:
        thoughts: Thoughts K per token.
        jacobi_sweeps: Jacobi sweeps J solving the deterministic thoughts the guide starts from.
        init_sigma: Starting noise scale sigma of the prior (learned).
    """

    thoughts: int = 1
    jacobi_sweeps: int = 3
    init_sigma: float = 0.1


class ThoughtNoisePrior(Prior):
    """p(z | context) = N(context, sigma^2 I) over a sequence's thoughts (T*K, D); sigma learned.

    Args:
        num_latents: Thought slots per sequence, T*K.
        latent_dim: Thought width D (the decoder's d_model).
        init_sigma: Starting sigma.
    """

    token_level = True

    def __init__(self, num_latents: int, latent_dim: int, init_sigma: float = 0.1):
        super().__init__(num_latents, latent_dim)
        if init_sigma <= 0:
            raise ConfigError(f"ThoughtNoisePrior: init_sigma must be > 0, got {init_sigma}.")
        self.log_sigma = nn.Parameter(torch.tensor(math.log(init_sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, context: torch.Tensor | None = None) -> dist.TorchDistribution:
        if context is None:
            raise ValueError("ThoughtNoisePrior is a prior over thoughts given their context "
                             "(the hidden states before them); pass context.")
        return dist.Normal(context, self.sigma).to_event(2)


class ThoughtSequence(dist.TorchDistribution):
    """The autoregressive prior over all thoughts of a batch: batch (B,), event (T*K, D).

    `log_prob(z)` runs one decoder pass over the slots built from z and scores each thought under
    N(hidden state of the slot before it, sigma^2); `sample()` draws the thoughts slot by slot.

    Args:
        family: The `StochasticPonderLM2`.
        x: Token-slot inputs (B, T, D).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, family: StochasticPonderLM2, x: torch.Tensor):
        self.family, self.x = family, x
        B, T, D = x.shape
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # (z, its slot states), reused
        super().__init__(torch.Size((B,)), torch.Size((T * family.thoughts, D)), validate_args=False)

    def means(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot states (B, T, K+1, D) given thoughts z (B, T*K, D), and the prior means (B, T*K, D)."""
        if self.hidden is not None and self.hidden[0] is z:
            h = self.hidden[1]
        else:
            B, T, D = self.x.shape
            h = self.family.run_slots(self.x, z.reshape(B, T, -1, D))  # (B, T, K+1, D)
            self.hidden = (z, h)
        return h, h[:, :, :-1].reshape(z.shape)  # thought k reads slot k-1's output

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.family.prior(self.means(value)[1]).log_prob(value)  # (B,)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape != torch.Size():
            raise NotImplementedError("ThoughtSequence draws one sample per sequence.")
        B, T, D = self.x.shape
        return self.family.prior_thoughts(self.x).reshape(B, T * self.family.thoughts, D)


class ThoughtGuide(LocalGaussianGuide):
    """Local Gaussian per thought, started at the family's deterministic (Jacobi-solved) thoughts,
    `StochasticPonderLM2.initial_latents`, with the prior's sigma as its scale."""

    starts_from_model = True

    def __init__(self):
        super().__init__(init_scale=1.0)

    def init_locals(self, prior, tokens, start):
        if not isinstance(prior, ThoughtNoisePrior) or start is None:
            raise ConfigError("ThoughtGuide fits the thoughts of a ponderlm2_stochastic model: reset it "
                              "with that model's prior and its initial_latents(tokens) as start.")
        return {"loc": start, "log_scale": torch.full_like(start, float(prior.log_sigma.detach()))}


class StochasticPonderLM2(PonderLM2):
    """PonderLM-2 whose thoughts carry Gaussian noise of learned scale, inferred per token.

    Args:
        decoder: A `Decoder` with n_latent == 0.
        seq_len: Tokens T per training sequence (fixes the site's event shape (T*K, D)).
        thoughts: Thoughts K per token (>= 1).
        init_sigma: Starting prior noise scale.
        **kwargs: As `PonderLM2` (jacobi_sweeps sets the guide's starting point); embed_scale
            defaults to "rmsnorm" and max_jacobi_sweeps to None here, as before PonderLM2's change.
    """

    name = "ponderlm2_stochastic"
    Options = StochasticPonderLM2Options
    default_guide = ThoughtGuide
    exact_nll = False

    def __init__(self, decoder: Decoder, seq_len: int, thoughts: int = 1, init_sigma: float = 0.1,
                 **kwargs):
        if thoughts < 1:
            raise ConfigError(f"StochasticPonderLM2 needs thoughts >= 1, got {thoughts}.")
        # this family keeps normed embeddings and a fixed J (PonderLM2's defaults follow the paper)
        kwargs.setdefault("embed_scale", "rmsnorm")
        kwargs.setdefault("max_jacobi_sweeps", None)
        super().__init__(decoder, thoughts=thoughts, **kwargs)
        self.seq_len = seq_len
        self.prior = ThoughtNoisePrior(seq_len * thoughts, decoder.cfg.d_model, init_sigma)

    @classmethod
    def from_config(cls, decoder: DecoderConfig, options: StochasticPonderLM2Options | None = None,
                    prior=None, prior_kwargs=None) -> StochasticPonderLM2:
        """Sequences of block_size tokens (the site's event shape (T*K, D) is fixed by it)."""
        cls.refuse_prior(prior, prior_kwargs)
        options = options or StochasticPonderLM2Options()
        return cls(Decoder(decoder), seq_len=decoder.block_size, thoughts=options.thoughts,
                   init_sigma=options.init_sigma, jacobi_sweeps=options.jacobi_sweeps)

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over blocks `tokens` (B, T+1), T <= seq_len (shorter blocks: prefixes, short
        texts; the site then has event shape (T*K, D)).

        Returns:
            The thoughts z (B, T*K, D).
        """
        inputs, targets = split_block(tokens)  # (B, T) each
        if inputs.shape[1] > self.seq_len:
            raise DataError(f"StochasticPonderLM2 was built for sequences of at most {self.seq_len} "
                            f"tokens, got {inputs.shape[1]}.")
        x = self.token_inputs(inputs)  # (B, T, D)
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            prior = ThoughtSequence(self, x)
            z = pyro.sample(LATENT_SITE, prior)  # (B, T*K, D)
            h = prior.means(z)[0][:, :, -1]  # (B, T, D): the last slot of each token predicts
            pyro.sample(TOKEN_SITE, TokenSequence.from_hidden(h, self.decoder.head_weight),
                        obs=targets)
        return z

    @torch.no_grad()
    def prior_thoughts(self, x: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """Thoughts (B, T, K, D) of token inputs x (B, T, D): `given` (B, T0*K, D) for the first T0
        tokens, the rest drawn from the prior N(h(slot before), sigma^2) slot by slot."""
        B, T, D = x.shape
        K, sigma = self.thoughts, self.prior.sigma
        z = x.new_zeros(B, T, K, D)  # (B, T, K, D)
        start = 0 if given is None else given.shape[1] // K
        if given is not None:
            z[:, :start] = given.reshape(B, start, K, D)
        for t in range(start, T):
            for k in range(K):
                h = self.run_slots(x[:, :t + 1], z[:, :t + 1])  # (B, t+1, K+1, D)
                z[:, t, k] = h[:, t, k] + sigma * torch.randn_like(h[:, t, k])
        return z

    def full_logits(self, tokens: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) of `tokens` (B, T).

        Args:
            latents: None: the prior-mean thoughts (sigma 0, as decoding uses). Else the thoughts
                (B, T0*K, D) of the first T0 <= T tokens (a draw of q fitted on a prefix of T0+1
                tokens); those of the later tokens are drawn from the prior given their context
                (see the module notes), so each call is one draw. Anything else (e.g. a
                sequence-level z) is refused: this family has none.
        """
        if latents is None:
            return super().full_logits(tokens)
        B, T = tokens.shape
        K, D = self.thoughts, self.decoder.cfg.d_model
        if latents.dim() != 3 or latents.shape[0] != B or latents.shape[2] != D \
                or latents.shape[1] % K or latents.shape[1] > T * K:
            self.refuse_latents(latents)
        self.check_length(T)
        with torch.no_grad():
            x = self.token_inputs(tokens)  # (B, T, D)
            h = self.run_slots(x, self.prior_thoughts(x, latents))[:, :, -1]  # (B, T, D)
            return self.decoder.logits(h)  # (B, T, V)

    @torch.no_grad()
    def exact_thoughts_given(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The prior means (B, T, K, D) of thoughts z (B, T*K, D), each from a separate prefix pass."""
        B, T, D = x.shape
        z = z.view(B, T, self.thoughts, D)  # (B, T, K, D)
        means = torch.zeros_like(z)
        for t in range(T):
            for k in range(self.thoughts):
                means[:, t, k] = self.run_slots(x[:, :t + 1], z[:, :t + 1])[:, t, k]
        return means

    @torch.no_grad()
    def initial_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """The guide's starting means (B, T*K, D): the Jacobi-solved deterministic thoughts."""
        x = self.token_inputs(split_block(tokens)[0])  # (B, T, D)
        z = self.jacobi_thoughts(x, self.jacobi_sweeps)  # (B, T, K, D)
        return z.reshape(z.shape[0], -1, z.shape[-1])
