"""The fast inner loop: K steps on a batch's local posterior parameters only."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ltm.core.errors import ConfigError, DivergedError
from ltm.core.protocols import ModelFamily
from ltm.inference.elbo import LatentELBO
from ltm.inference.guides import LocalGuide
from ltm.inference.guides.base import pyro_guide
from ltm.inference.kl_control import KLControl
from ltm.inference.schedules import INNER_SCHEDULES, inner_lr

# "natgrad": SGD along the guide's natural gradient (`LocalGuide.natural_gradient`); "adamw": the
# published code's (AdamW with torch's default weight decay 0.01 on the local parameters).
FAST_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                   "natgrad": torch.optim.SGD}


@dataclass
class InnerLoopConfig:
    """How the local posterior of each batch is fitted.

    Attributes:
        steps: Inner steps K (0 keeps the guide at its initialisation).
        lr: Fast learning rate.
        optimizer: "adam", "adamw" (the published code's), "sgd", or "natgrad" (SGD along the
            natural gradient of q, where the guide knows its Fisher information, e.g. the local
            Gaussian; else plain SGD).
        schedule: Within-loop learning-rate schedule: "constant", "cosine" or "linear".
        reuse_noise: Use one noise draw for every inner step (the published code's behaviour)
            instead of a fresh draw per step.
        accumulate_decoder_grads: Also accumulate decoder and prior gradients over the inner
            trajectory into `.grad` (the published code's behaviour; costs a full backward).
    """

    steps: int = 8
    lr: float = 0.1
    optimizer: str = "adam"
    schedule: str = "cosine"
    reuse_noise: bool = False
    accumulate_decoder_grads: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"inner steps K must be >= 0, got {self.steps}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"the fast learning rate must be a finite number > 0, got {self.lr}.")
        if self.optimizer not in FAST_OPTIMIZERS:
            raise ConfigError(f"unknown fast optimizer '{self.optimizer}'; choose one of "
                              f"{sorted(FAST_OPTIMIZERS)}.")
        if self.schedule not in INNER_SCHEDULES:
            raise ConfigError(f"unknown inner-loop schedule '{self.schedule}'; choose one of "
                              f"{INNER_SCHEDULES}.")


def fit_local(family: ModelFamily, guide: LocalGuide, tokens: torch.Tensor, cfg: InnerLoopConfig,
              elbo: LatentELBO | None = None,
              noise: torch.Tensor | None = None, kl_control: KLControl | None = None,
              step: int = 0, loss_tokens: int | None = None) -> list[float]:
    """Reset `guide` for this batch and fit its local tensors with `cfg.steps` fast steps.

    Gradients are taken with respect to the local tensors alone (`torch.autograd.grad`), so no
    decoder or prior gradient is computed or stored, unless `cfg.accumulate_decoder_grads`.

    Args:
        family: The model family: `family.model(tokens)` is the Pyro model, `family.prior` sizes
            the guide's tensors, and `family.initial_latents(tokens)` is the starting point of
            guides that start from the model's own guess.
        guide: A local guide; reset here with fresh tensors.
        tokens: Batch of token ids (B, T+1).
        cfg: Inner-loop settings.
        elbo: Loss object (default: a one-particle `LatentELBO`).
        noise: With `cfg.reuse_noise`, the single draw (B, N, D) to reuse (default: fresh).
        kl_control: Training-time free bits / KL warm-up (`KLControl`); None (and always at
            evaluation) fits the true ELBO.
        step: The outer step, for the KL warm-up's beta.
        loss_tokens: The slow step's token count, which scales decoder gradients accumulated by
            `cfg.accumulate_decoder_grads` (default: this batch's; the global batch's under
            data-parallel training or micro-batches).

    Returns:
        The loss (summed over the batch, nats) before each step: the negative ELBO, or the
        controlled objective under `kl_control`.

    Raises:
        DivergedError: if a loss is not finite, naming the step and the learning rate to lower.
    """
    elbo = elbo or LatentELBO()
    start = family.initial_latents(tokens) if guide.starts_from_model else None
    guide.reset(family.prior, tokens, start)
    params = guide.local_parameters()
    if cfg.reuse_noise:
        guide.freeze_noise(family.prior, tokens, noise)
    if cfg.steps == 0 or not params:
        return []
    q = pyro_guide(guide, family.prior)
    sampled = guide.sample_locals(lambda: -elbo.terms(family.model, q, tokens).elbo, cfg.steps,
                                  family.prior)
    if sampled is not None:
        return sampled
    if guide.unroll and family.training and torch.is_grad_enabled():
        return _unrolled_fit(family, guide, tokens, cfg, elbo)
    opt = FAST_OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr)
    n_tokens = loss_tokens or tokens[:, 1:].numel()
    controlled, natural = kl_control is not None and kl_control.active, cfg.optimizer == "natgrad"
    losses = []
    with _frozen(family, guide, not cfg.accumulate_decoder_grads):
        for k in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = inner_lr(k, cfg.steps, cfg.lr, cfg.schedule)
            with _divergence_named(k, cfg, family, guide):
                if controlled:
                    loss = kl_control.loss(elbo.terms(family.model, q, tokens), step)
                else:
                    loss = elbo.differentiable_loss(family.model, q, tokens)  # summed over sequences
            value = loss.item()  # the one host sync of the step
            _check_finite(value, k, cfg, family)
            if cfg.accumulate_decoder_grads:
                (loss / n_tokens).backward()  # decoder grads accumulate at the slow step's scale
                for p in params:
                    p.grad.mul_(n_tokens)
            else:
                for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
                    p.grad = g
            if natural:
                grads = guide.natural_gradient({name: t.grad for name, t in guide.locals.items()})
                for name, t in guide.locals.items():
                    t.grad = grads[name]
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(value)
    return losses


@contextlib.contextmanager
def _frozen(family: ModelFamily, guide: LocalGuide, active: bool):
    """While active, the family's parameters not shared with the guide do not require grad (the
    previous flags restored on exit): gradient work done in the forward pass, such as the fused
    cross-entropy's weight gradient, is then skipped when only the local tensors are differentiated."""
    shared = {id(p) for p in guide.parameters()}
    frozen = [p for p in family.parameters() if active and p.requires_grad and id(p) not in shared]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def check_unrollable(guide: LocalGuide, cfg: InnerLoopConfig) -> None:
    """Refuse an unrolled fit with a fast optimiser other than plain SGD."""
    if guide.unroll and cfg.optimizer != "sgd":
        raise ConfigError(f"{type(guide).__name__} with unroll=True differentiates through plain "
                          f"gradient steps; set the fast optimizer to 'sgd' (got '{cfg.optimizer}').")


def _unrolled_fit(family: ModelFamily, guide: LocalGuide, tokens: torch.Tensor, cfg: InnerLoopConfig,
                  elbo: LatentELBO) -> list[float]:
    """K plain gradient steps from `guide.attach_locals(tokens)`, kept differentiable
    (`create_graph`), so that the slow step's gradient reaches the guide's global parameters
    through the fit."""
    check_unrollable(guide, cfg)
    guide.attach_locals(tokens)
    q = pyro_guide(guide, family.prior)
    losses = []
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no double backward
        for k in range(cfg.steps):
            lr = inner_lr(k, cfg.steps, cfg.lr, cfg.schedule)
            with _divergence_named(k, cfg, family, guide):
                loss = elbo.differentiable_loss(family.model, q, tokens)  # summed over sequences
            value = loss.item()
            _check_finite(value, k, cfg, family)
            names = list(guide.locals)
            grads = torch.autograd.grad(loss, [guide.locals[n] for n in names], create_graph=True)
            guide.locals = {n: guide.locals[n] - lr * g for n, g in zip(names, grads, strict=True)}
            losses.append(value)
    return losses


@contextlib.contextmanager
def _divergence_named(k: int, cfg: InnerLoopConfig, family: ModelFamily, guide: LocalGuide):
    """With Pyro's argument checks on, a NaN in the local tensors or the weights is refused when a
    distribution is built, before any loss exists: name the divergence as `_check_finite` does."""
    try:
        yield
    except ValueError:
        tensors = [*guide.locals.values(), *family.parameters()]
        if all(bool(torch.isfinite(t).all()) for t in tensors):
            raise
        _check_finite(math.nan, k, cfg, family)


def _check_finite(value: float, k: int, cfg: InnerLoopConfig, family: ModelFamily) -> None:
    """Raise `DivergedError` for a loss that is not finite, blaming the slow step when the decoder's
    own weights are no longer finite (the inner loop cannot have caused that)."""
    if math.isfinite(value):
        return
    if not all(bool(torch.isfinite(p).all()) for p in family.parameters()):
        raise DivergedError(f"inner step {k + 1}/{cfg.steps}: the ELBO loss is {value} because the "
                            f"model's weights are no longer finite after the last slow step; lower "
                            f"the slow learning rate (--lr).")
    raise DivergedError(f"inner step {k + 1}/{cfg.steps}: the ELBO loss is {value}; lower the fast "
                        f"learning rate (--fast-lr {cfg.lr}) or check the prior and guide.")
