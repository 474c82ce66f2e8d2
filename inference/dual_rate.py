"""The dual-rate optimiser: K fast steps on local posteriors, then one slow step on the model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pyro
import torch
from torch import nn

from ltm.inference.elbo import ElboTerms, LatentELBO
from ltm.inference.guides import LocalGuide, check_guide_fits_prior
from ltm.inference.inner_loop import InnerLoopConfig, fit_local
from ltm.inference.schedules import warmup_cosine


@dataclass
class SlowConfig:
    """The slow (outer) optimiser: AdamW with warm-up + cosine and global grad-norm clipping."""

    lr: float = 3e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    max_steps: int = 10_000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class StepResult:
    """What one dual-rate step measured, per token of the batch (nats)."""

    loss: float
    reconstruction: float
    kl: float
    inner_losses: list[float] = field(default_factory=list)
    grad_norm: float = 0.0
    lr: float = 0.0

    @property
    def perplexity_bound(self) -> float:
        return math.exp(self.loss)


def slow_param_groups(model: nn.Module, guide: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on decoder matrices; none on norms, the prior and guide globals."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_prior = name.startswith("prior.")
        (decay if p.dim() >= 2 and not is_prior else no_decay).append(p)
    no_decay += [p for p in guide.parameters() if p.requires_grad]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class DualRateOptimizer:
    """Per batch: fit q(z | x) with K fast steps, then one slow step on decoder + prior.

    The slow step uses the fitted local parameters detached and a fresh noise draw (unless
    `inner.reuse_noise`, which keeps the inner loop's draw, as the published code does).

    Args:
        family: The model family: `.model(tokens)` (the Pyro model) and `.prior`.
        guide: The local guide.
        inner: Fast inner-loop settings (K, fast lr, schedule, ...).
        slow: Slow optimiser settings.
        num_particles: Noise draws averaged in the slow step's ELBO.
        validate: Run Pyro's validation checks (slower).
    """

    def __init__(self, family: nn.Module, guide: LocalGuide, inner: InnerLoopConfig | None = None,
                 slow: SlowConfig | None = None, num_particles: int = 1, validate: bool = False):
        check_guide_fits_prior(guide, family.prior)
        self.family, self.guide = family, guide
        self.inner, self.slow = inner or InnerLoopConfig(), slow or SlowConfig()
        self.validate = validate
        self.inner_elbo = LatentELBO()
        self.elbo = LatentELBO(num_particles=num_particles)
        self.optimizer = torch.optim.AdamW(
            slow_param_groups(family, guide, self.slow.weight_decay), lr=self.slow.lr,
            betas=self.slow.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, self.slow.warmup_steps,
                                                    self.slow.max_steps, self.slow.min_lr_ratio))

    def fit_local(self, tokens: torch.Tensor, steps: int | None = None) -> list[float]:
        """Fit the guide's local tensors to `tokens` (B, T+1) with K (or `steps`) fast steps."""
        cfg = self.inner if steps is None else replace(self.inner, steps=steps)
        return fit_local(self.family, self.guide, tokens, cfg, self.inner_elbo, self.validate)

    def terms(self, tokens: torch.Tensor) -> ElboTerms:
        """Per-sequence reconstruction and KL of the current (detached) guide, fresh noise."""
        with pyro.validation_enabled(self.validate):
            return self.elbo.terms(self.family.model, self.guide, tokens)

    def step(self, tokens: torch.Tensor) -> StepResult:
        """One dual-rate step on a batch of blocks `tokens` (B, T+1)."""
        self.family.train()
        inner_losses = self.fit_local(tokens)
        self.guide.detach_locals()
        terms = self.terms(tokens)
        n_tokens = tokens[:, 1:].numel()
        loss = -terms.elbo.sum() / n_tokens
        if not torch.isfinite(loss):
            raise FloatingPointError(f"slow step: the ELBO loss is {loss.item()}; lower the slow "
                                     f"learning rate ({self.slow.lr}) or check the prior.")
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = nn.utils.clip_grad_norm_(params, self.slow.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss=loss.item(), reconstruction=-terms.reconstruction.sum().item()
                          / n_tokens, kl=terms.kl.sum().item() / n_tokens,
                          inner_losses=inner_losses, grad_norm=float(grad_norm), lr=lr)
