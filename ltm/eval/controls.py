"""The controls of a comparison run: the baselines its win must survive.

A latent family adds parameters (the LTM's cross-attention) and compute (the inner loop, thought
slots), so beating a same-size vanilla decoder does not show that the latent pays. Each run may
name controls, each trained and scored like any other run:

    baseline         vanilla: the same decoder (shape, window) without the family's additions
    params           vanilla, same window, width chosen so its parameters match the run's within 2 %
                     (d_model in steps the head count allows; then the MLP width d_ff closes the gap)
    flops            vanilla, same window and tokens, width (then depth) chosen so its measured
                     training FLOPs match the run's within 10 %
    inference_flops  (token-level families) vanilla whose FLOPs per generated token (KV-cached
                     decoding, thought slots and pondering passes included) match the run's within
                     10 %
    fixed_latent     the same family and decoder with z fixed: a learned point-mass prior and the
                     `prior` guide (KL 0). The architecture without inference: it separates "the
                     cross-attention helps" from "inferring z helps"

    values = control_values("params", run_config, vocab_size=2048, batch=batch)  # -> Sized
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from pyro.util import get_rng_state, set_rng_state
from torch.utils.flop_counter import FlopCounterMode

from ltm.core.errors import ConfigError
from ltm.eval.flops import step_cost
from ltm.families import FAMILIES
from ltm.inference import EarlyInference, KLControl
from ltm.training.build import build_model
from ltm.training.config import TrainConfig, merge_values

CONTROL_KINDS = ("baseline", "params", "flops", "inference_flops", "fixed_latent")
BASELINE = next(name for name, family in FAMILIES.items() if family.is_baseline)  # "vanilla"
PARAMS_TOLERANCE, FLOPS_TOLERANCE = 0.02, 0.10
DESCRIPTIONS = {
    "baseline": "vanilla, same decoder and window",
    "params": "vanilla, same window, parameter-matched",
    "flops": "vanilla, same window, training-FLOP-matched",
    "inference_flops": "vanilla, same window, inference-FLOP-matched",
    "fixed_latent": "same model, z fixed (delta prior, no inference)",
}
# Settings that act only on a stochastic latent: a vanilla control takes the defaults.
_LATENT_ONLY = {"prior": None, "prior_kwargs": {}, "guide": None, "guide_kwargs": {},
                "kl": dataclasses.asdict(KLControl()), "early": dataclasses.asdict(EarlyInference())}


def with_values(config: TrainConfig, values: dict) -> TrainConfig:
    """`config` with `values` (shared fields and whole or partial sections, as `Sized.values`)."""
    return TrainConfig.from_dict(merge_values(config.to_dict(), values))


@dataclass
class Sized:
    """A control's config values and what they matched.

    Attributes:
        values: TrainConfig values that make the control from its run (model, d_model, ...).
        measure: "parameters", "training FLOPs" or "forward FLOPs per token"; None when nothing is
            matched (the baseline and fixed-latent controls).
        target: The run's value of `measure`.
        achieved: The control's.
    """

    values: dict
    measure: str | None = None
    target: float | None = None
    achieved: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.target is None else self.achieved / self.target

    def describe(self) -> str:
        shape = ", ".join(f"{k} {v}" for k, v in self.values.items()
                          if k in ("d_model", "n_layer", "d_ff") and v is not None)
        if self.measure is None:
            return shape
        return (f"{shape}: {self.achieved:.4g} {self.measure} against {self.target:.4g} "
                f"({100 * (self.ratio - 1):+.1f} %)")

    def to_dict(self) -> dict:
        return {"values": self.values, "measure": self.measure, "target": self.target,
                "achieved": self.achieved}


def refuse_control(kind: str, config: TrainConfig, run: str) -> None:
    """Refuse a control that does not apply to `run`'s family, in one sentence.

    Raises:
        ConfigError: for an unknown kind, controls of a vanilla run, a fixed-latent control of a
            family without a latent prior, or inference FLOPs for a sequence-level family.
    """
    family = config.family
    if kind not in CONTROL_KINDS:
        raise ConfigError(f"run '{run}': unknown control '{kind}'; choose from {', '.join(CONTROL_KINDS)}.")
    if family.is_baseline:
        raise ConfigError(f"run '{run}' is a {family.name} decoder, the control itself; give controls "
                          f"to the runs it should control.")
    if kind == "fixed_latent" and not family.takes_prior:
        raise ConfigError(f"run '{run}': a fixed_latent control fixes a sequence-level latent, and "
                          f"family {family.name} has none (its thoughts are deterministic or "
                          f"token-level); use vanilla, params or flops controls.")
    if kind == "inference_flops" and family.sequence_latent:
        raise ConfigError(f"run '{run}': inference_flops matches the forward cost per token of a "
                          f"token-level family; family {family.name} infers a sequence-level latent "
                          f"instead; use flops.")


def control_values(kind: str, config: TrainConfig, vocab_size: int, batch: torch.Tensor,
                   run: str = "run") -> Sized:
    """The config values of `kind`'s control of a run with `config`, sized where the kind asks.

    Args:
        kind: One of `CONTROL_KINDS`.
        config: The run's config.
        vocab_size: The tokenizer's vocabulary (parameter counts depend on it).
        batch: A training batch (B, T+1) for measuring FLOPs.
        run: The run's name, for messages.

    Raises:
        ConfigError: for a control that does not apply, or one no shape can size within its
            tolerance (naming the closest).
    """
    refuse_control(kind, config, run)
    if kind == "fixed_latent":
        return Sized({**_LATENT_ONLY, "prior": "delta", "guide": "prior"})
    vanilla = {**_LATENT_ONLY, "model": BASELINE}
    if kind == "baseline":
        return Sized(vanilla)
    base = with_values(config, vanilla)
    if kind == "params":
        sized = _match_params(base, _params(config, vocab_size), vocab_size, run)
    elif kind == "flops":
        target = step_cost(config, vocab_size, batch)["training_flops"]
        sized = _match_cost(base, target, lambda c: step_cost(c, vocab_size, batch)["training_flops"],
                            "training FLOPs", run, kind)
    else:
        target = decode_flops_per_token(config, vocab_size, batch)
        sized = _match_cost(base, target, lambda c: decode_flops_per_token(c, vocab_size, batch),
                            "FLOPs per generated token", run, kind)
    sized.values = {**vanilla, **sized.values}
    return sized


def _params(config: TrainConfig, vocab_size: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation, no RNG
        return sum(p.numel() for p in build_model(config, vocab_size).parameters())


def decode_flops_per_token(config: TrainConfig, vocab_size: int, batch: torch.Tensor,
                           rows: int = 2) -> float:
    """FLOPs per token of generating `rows` rows of `batch` with the KV cache (the first token
    prefilled, then one decode step per token): what producing a token costs the family, its
    thought slots and pondering passes included."""
    saved = get_rng_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_model(config, vocab_size).eval()
            tokens = batch[:rows, :-1]  # (R, T)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                _, state = model.prefill(tokens[:, :1], max_len=tokens.shape[1])
                for t in range(1, tokens.shape[1]):
                    _, state = model.decode_step(tokens[:, t], state)
    finally:
        set_rng_state(saved)
    return counter.get_total_flops() / tokens.numel()


def _widths(config: TrainConfig) -> list[int]:
    """d_model values the head count allows (head width even, for RoPE), from 1/4 to 4x the run's."""
    step = 2 * config.n_head
    return list(range(step, 4 * config.d_model + 1, step))


def _match_params(base: TrainConfig, target: int, vocab_size: int, run: str) -> Sized:
    """Width first; then the MLP width d_ff closes what the width's steps leave."""
    count = {d: _params(base.replace(d_model=d, d_ff=None), vocab_size) for d in _widths(base)}
    d = min(count, key=lambda w: abs(count[w] - target))
    if abs(count[d] / target - 1) <= PARAMS_TOLERANCE:
        return Sized({"d_model": d, "d_ff": None}, "parameters", target, count[d])
    default_ff = base.replace(d_model=d, d_ff=None).decoder_config(vocab_size).d_ff
    slope = _params(base.replace(d_model=d, d_ff=default_ff + 1), vocab_size) - count[d]
    d_ff = max(1, default_ff + round((target - count[d]) / slope))
    achieved = _params(base.replace(d_model=d, d_ff=d_ff), vocab_size)
    if abs(achieved / target - 1) > PARAMS_TOLERANCE:
        raise ConfigError(f"run '{run}': no vanilla width within {PARAMS_TOLERANCE:.0%} of its "
                          f"{target:,} parameters that {base.n_head} heads allow; the closest is d_model "
                          f"{d}, d_ff {d_ff} with {achieved:,}; change n_head or the run's size.")
    return Sized({"d_model": d, "d_ff": d_ff}, "parameters", target, achieved)


def _match_cost(base: TrainConfig, target: float, measure, what: str, run: str, kind: str) -> Sized:
    """Width at the run's depth; if no width is within tolerance, more depth (up to 3x)."""
    best = None
    for n_layer in range(base.n_layer, 3 * base.n_layer + 1):
        widths = _widths(base)
        lo, hi = 0, len(widths) - 1
        seen = {}
        while lo <= hi:  # the cost grows with the width: bisect, measuring each width once
            mid = (lo + hi) // 2
            cfg = base.replace(d_model=widths[mid], d_ff=None, n_layer=n_layer)
            seen[widths[mid]] = measure(cfg)
            if seen[widths[mid]] < target:
                lo = mid + 1
            else:
                hi = mid - 1
        for d, cost in seen.items():
            miss = abs(math.log(cost / target))
            if best is None or miss < best[0]:
                best = (miss, d, n_layer, cost)
        if best[0] <= math.log(1 + FLOPS_TOLERANCE):
            break
    miss, d, n_layer, cost = best
    if miss > math.log(1 + FLOPS_TOLERANCE):
        raise ConfigError(f"run '{run}': no vanilla shape within {FLOPS_TOLERANCE:.0%} of its {target:.3g} "
                          f"{what} for the {kind} control; the closest is d_model {d}, n_layer "
                          f"{n_layer} with {cost:.3g}; change n_head or the run's size.")
    return Sized({"d_model": d, "d_ff": None, "n_layer": n_layer}, what, target, cost)
