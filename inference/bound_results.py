"""What the honest-evaluation functions of `ltm.inference.bounds` return: labelled, per-token numbers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ELBO_LABEL = ("fresh-noise ELBO bound: q(z|x) fitted with K inner steps on the scored text, then "
              "scored with fresh noise draws; -ELBO >= NLL (an upper bound, not a perplexity)")
IWAE_LABEL = ("importance-weighted bound: q(z|x) fitted with K inner steps on the scored text, "
              "-log mean_s p(x,z_s)/q(z_s) over S fresh draws; >= NLL in expectation, tighter than "
              "the ELBO")
PREFIX_LABEL = ("prefix-predictive NLL: q(z) fitted on the prefix only, the continuation scored as "
                "-log mean_s p(continuation | prefix, z_s); comparable with autoregressive perplexity")
PUBLISHED_LABEL = ("published LTM protocol (for comparison with the paper only): q(z|x) fitted on "
                   "the scored text with ONE noise draw reused by every inner step, scored with that "
                   "same draw; mean over sequences of exp(-ELBO_i / T_i). Optimistic: not a bound")

JOINT_LABEL = ("-log p(x, z) per token at the guide's sample z (a MAP point or a Langevin draw): the "
               "training objective of a guide without a density, not a bound on -log p(x)")


def capped_exp(nats: float) -> float:
    """exp(nats), capped at exp(700) so a diverged number stays finite."""
    return math.exp(min(nats, 700.0))


@dataclass
class ElboBound:
    """Fresh-noise ELBO bound, per token (nats); `tokens` scored over `sequences` sequences."""

    label: str
    inner_steps: int
    num_draws: int
    reconstruction: float  # -E_q[log p(x|z)] per token
    kl: float  # KL(q || p) per token
    tokens: int
    sequences: int

    @property
    def neg_elbo(self) -> float:
        return self.reconstruction + self.kl

    @property
    def perplexity_bound(self) -> float:
        return capped_exp(self.neg_elbo)

    def to_dict(self) -> dict:
        return {**asdict(self), "neg_elbo": self.neg_elbo, "perplexity_bound": self.perplexity_bound}


@dataclass
class ImportanceWeightedBound:
    """-log (1/S) sum_s p(x, z_s)/q(z_s) per token (nats)."""

    label: str
    inner_steps: int
    num_samples: int
    nll_bound: float
    tokens: int
    sequences: int

    @property
    def perplexity_bound(self) -> float:
        return capped_exp(self.nll_bound)

    def to_dict(self) -> dict:
        return {**asdict(self), "perplexity_bound": self.perplexity_bound}


@dataclass
class PrefixPredictive:
    """-log (1/S) sum_s p(continuation | prefix, z_s) per continuation token (nats)."""

    label: str
    inner_steps: int
    num_samples: int
    prefix_len: int
    nll: float
    tokens: int  # continuation tokens scored
    sequences: int

    @property
    def perplexity(self) -> float:
        return capped_exp(self.nll)

    def to_dict(self) -> dict:
        return {**asdict(self), "perplexity": self.perplexity}


@dataclass
class PublishedProtocol:
    """The published protocol's numbers: same noise for fit and score.

    Attributes:
        neg_elbo: -ELBO per token with the fit's own noise draw (nats).
        mean_sequence_perplexity: mean_i exp(-ELBO_i / T_i): the number the protocol reports.
        perplexity_of_mean: exp(sum_i -ELBO_i / sum_i T_i), for reference.
    """

    label: str
    inner_steps: int
    reconstruction: float
    kl: float
    neg_elbo: float
    mean_sequence_perplexity: float
    perplexity_of_mean: float
    tokens: int
    sequences: int

    def to_dict(self) -> dict:
        return asdict(self)
