"""The dual-rate optimiser: K fast steps on local posteriors, then one slow step on the model."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ltm.core.errors import ConfigError, DivergedError
from ltm.core.loss_mask import is_masked
from ltm.core.protocols import ModelFamily
from ltm.inference.bound_results import capped_exp
from ltm.inference.elbo import ElboTerms, LatentELBO
from ltm.inference.fixed_noise import ShardNoise
from ltm.inference.guides import LocalGuide, check_guide_fits_prior
from ltm.inference.guides.base import pyro_guide
from ltm.inference.inner_loop import InnerLoopConfig, check_unrollable, fit_local
from ltm.inference.kl_control import KLControl
from ltm.inference.schedules import warmup_cosine


@dataclass
class SlowConfig:
    """The slow (outer) optimiser: AdamW with warm-up + cosine and global grad-norm clipping.

    Attributes:
        lr: Peak learning rate.
        weight_decay: AdamW weight decay on decoder matrices (none on norms, the prior and the
            guide's global parameters).
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        warmup_steps: Linear learning-rate warm-up steps.
        decay_steps: Cosine horizon in steps, after the warm-up down to min_lr_ratio x lr (none or
            0: no decay; a training run uses its max_steps).
        min_lr_ratio: Final learning rate as a fraction of lr.
        grad_clip: Global gradient-norm clip of the slow step.
        new_lr: Peak learning rate of the parameters a pretrained decoder did not give (the
            cross-attention to latents, a family's own parts, the prior); none: lr for all.
    """

    lr: float = 3e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 100
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    new_lr: float | None = None

    def __post_init__(self) -> None:
        if self.decay_steps == 0:  # "0" meant "the run's max_steps" in earlier versions' lr_decay_steps
            self.decay_steps = None
        for lr in (self.lr, self.new_lr if self.new_lr is not None else self.lr):
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(f"the slow learning rates must be finite numbers > 0, got {lr}.")
        if self.warmup_steps < 0 or (self.decay_steps is not None and self.decay_steps < 0):
            raise ConfigError(f"warmup_steps must be >= 0 and decay_steps >= 1 or none, got "
                              f"{self.warmup_steps} and {self.decay_steps}.")


@dataclass
class StepResult:
    """What one dual-rate step measured, per token of the batch (nats)."""

    loss: float
    reconstruction: float
    kl: float
    inner_losses: list[float] = field(default_factory=list)
    grad_norm: float = 0.0
    lr: float = 0.0
    kl_weight: float = 1.0
    inner_steps: int = 0

    @property
    def perplexity_bound(self) -> float:
        return capped_exp(self.loss)


@dataclass
class EarlyInference:
    """A longer inner loop while the decoder is young (He et al. 2019's aggressive inference,
    run as a fixed budget rather than to convergence).

    Attributes:
        steps: Inner steps per batch during the early phase (None: off).
        until: Outer steps the early phase lasts.
    """

    steps: int | None = None
    until: int = 0

    def __post_init__(self) -> None:
        if (self.steps is not None and self.steps < 0) or self.until < 0:
            raise ConfigError(f"early inference needs steps >= 0 and until >= 0, got steps "
                              f"{self.steps}, until {self.until}.")

    def budget(self, step: int, default: int) -> int:
        """Inner steps at outer step `step` (0-based)."""
        return self.steps if self.steps is not None and step < self.until else default


def slow_param_groups(family: ModelFamily, guide: nn.Module, weight_decay: float,
                      new_lr: float | None = None, pretrained: Collection[str] = ()) -> list[dict]:
    """AdamW groups: decay on decoder matrices; none on norms, the prior and guide globals. With
    `new_lr`, the parameters not named in `pretrained` (and the guide's) form groups of their own
    at that learning rate; parameters that do not require grad (frozen) are left out."""
    groups: dict[tuple[bool, bool], list] = {}  # (new, decayed) -> parameters
    for name, p in family.named_parameters():
        if not p.requires_grad:
            continue
        decayed = p.dim() >= 2 and not name.startswith("prior.")
        groups.setdefault((new_lr is not None and name not in pretrained, decayed), []).append(p)
    guide_params = [p for p in guide.parameters() if p.requires_grad]
    groups.setdefault((new_lr is not None, False), []).extend(guide_params)
    if new_lr is None:  # two groups, as checkpoints of earlier versions hold
        return [{"params": groups.get((False, True), []), "weight_decay": weight_decay},
                {"params": groups.get((False, False), []), "weight_decay": 0.0}]
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0,
             **({"lr": new_lr} if new else {})}
            for (new, decayed), params in sorted(groups.items()) if params]


class DualRateOptimizer:
    """Per batch: fit q(z | x) with K fast steps, then one slow step on decoder + prior.

    The slow step uses the fitted local parameters detached and a fresh noise draw (unless
    `inner.reuse_noise`, which keeps the inner loop's draw, as the published code does).
    Under `kl_control` both the fit and the slow step minimise the controlled objective (free
    bits, KL warm-up); the reported loss stays the true negative ELBO. With `early` (He et al.
    2019's aggressive inference, as a budget), the first `early.until` steps fit q with
    `early.steps` inner steps instead of K.

    Args:
        family: The model family: `.model(tokens)` (the Pyro model) and `.prior`.
        guide: The local guide.
        inner: Fast inner-loop settings (K, fast lr, schedule, ...).
        slow: Slow optimiser settings.
        num_particles: Noise draws averaged in the slow step's ELBO.
        kl_control: Free bits and KL warm-up in the training objective (default: none).
        early: A longer inner loop while the decoder is young (default: none).
        micro_batches: Split each batch into this many micro-batches, fitted and backpropagated
            one after another, with one slow step (gradient accumulation; same result, less memory).
        pretrained: Names of the family's parameters a pretrained decoder gave (trained at
            `slow.lr`; the others at `slow.new_lr` when it is set).
    """

    def __init__(self, family: ModelFamily, guide: LocalGuide, inner: InnerLoopConfig | None = None,
                 slow: SlowConfig | None = None, num_particles: int = 1,
                 kl_control: KLControl | None = None, early: EarlyInference | None = None,
                 micro_batches: int = 1, pretrained: Collection[str] = ()):
        check_guide_fits_prior(guide, family.prior)
        self.family, self.guide = family, guide
        self.inner, self.slow = inner or InnerLoopConfig(), slow or SlowConfig()
        check_unrollable(guide, self.inner)
        self.kl_control = kl_control or KLControl()
        if self.kl_control.active and not guide.has_density:
            raise ConfigError(f"free bits and KL warm-up act on KL(q || p), which guide "
                              f"{type(guide).__name__} does not have (its q has no density); drop "
                              f"--free-bits and --kl-warmup-steps for it.")
        self.early = early or EarlyInference()
        self.micro_batches = micro_batches
        self.inner_elbo = LatentELBO()
        self.elbo = LatentELBO(num_particles=num_particles)
        self.optimizer = torch.optim.AdamW(
            slow_param_groups(family, guide, self.slow.weight_decay, self.slow.new_lr, pretrained),
            lr=self.slow.lr,
            betas=(self.slow.beta1, self.slow.beta2))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, self.slow.warmup_steps, self.slow.decay_steps,
                                                    self.slow.min_lr_ratio))

    @property
    def steps_done(self) -> int:
        """Outer steps taken so far (restored with the scheduler's state on resume)."""
        return self.scheduler.last_epoch

    def inner_steps_now(self) -> int:
        """The inner budget of the next outer step: the early budget while it lasts, else K."""
        return self.early.budget(self.steps_done, self.inner.steps)

    def fit_local(self, tokens: torch.Tensor, steps: int | None = None,
                  loss_tokens: int | None = None) -> list[float]:
        """Fit the guide's local tensors to `tokens` (B, T+1) with this step's budget (or `steps`)."""
        cfg = replace(self.inner, steps=self.inner_steps_now() if steps is None else steps)
        return fit_local(self.family, self.guide, tokens, cfg, self.inner_elbo,
                         kl_control=self.kl_control, step=self.steps_done, loss_tokens=loss_tokens)

    def terms(self, tokens: torch.Tensor) -> ElboTerms:
        """Per-sequence reconstruction and KL of the current (detached) guide, fresh noise."""
        return self.elbo.terms(self.family.model, pyro_guide(self.guide, self.family.prior), tokens)

    def step(self, tokens: torch.Tensor, shard: Shard | None = None) -> StepResult:
        """One dual-rate step on a batch of blocks `tokens` (B, T+1).

        Args:
            tokens: This process's sequences of the global batch (all of it on one process).
            shard: Data-parallel training: this process's place in the global batch and how the
                ranks sum tensors (default: one process holding the whole batch).
        """
        self.family.train()
        shard = shard or Shard(0, tokens.shape[0])
        step, k = self.steps_done, self.inner_steps_now()
        n_tokens = tokens[:, 1:].numel() * shard.rows // tokens.shape[0]  # the global batch's
        micros = tokens.chunk(self.micro_batches)  # each (B / A, T+1)
        sums = torch.zeros(4 + k, dtype=torch.float64)  # -ELBO, -recon, KL, masked targets, inner losses
        with rewinding_rng(tokens.device) as rewind:
            for i, micro in enumerate(micros):
                if i:
                    rewind()  # every micro-batch draws its rows of the same global-batch noise
                with ShardNoise(shard.offset + i * micro.shape[0], shard.rows):
                    last = shard.last_backward if i == len(micros) - 1 else None
                    sums += self._accumulate(micro, n_tokens, step, k, last)
        shard.sum_(sums)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        shard.sum_grads(params)
        grad_norm = shard.clip_grad_norm_(params, self.slow.grad_clip)
        if not torch.isfinite(grad_norm):  # stepping would make every weight NaN
            self.optimizer.zero_grad(set_to_none=True)
            raise DivergedError(f"slow step {step + 1}: the gradient norm is {grad_norm.item()}; lower "
                                f"the slow learning rate (--lr {self.slow.lr}) or check the prior.")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        # Reported per scored target; gradients and inner losses are scaled per block position.
        loss, recon, kl = (sums[:3] / (n_tokens - sums[3]).clamp(min=1)).tolist()
        return StepResult(loss=loss, reconstruction=recon, kl=kl, inner_losses=sums[4:].tolist(),
                          grad_norm=float(grad_norm), lr=lr, kl_weight=self.kl_control.beta(step),
                          inner_steps=k)

    def _accumulate(self, tokens: torch.Tensor, n_tokens: int, step: int, k: int,
                    last_backward=None) -> torch.Tensor:
        """Fit q on one micro-batch (B', T+1) and backpropagate its share of the slow loss (summed
        over the sequences, over the global token count `n_tokens`); `last_backward`, when given,
        is called before the step's last backward pass. Returns the summed -ELBO,
        -reconstruction, KL, the number of targets a task masks, and inner losses (4 + k,)."""
        inner_losses = self.fit_local(tokens, loss_tokens=n_tokens)
        if not self.guide.unroll:  # an unrolled fit stays differentiable into the guide's globals
            self.guide.detach_locals()
        terms = self.terms(tokens)
        neg_elbo = -terms.elbo.sum()
        objective = self.kl_control.loss(terms, step) if self.kl_control.active else neg_elbo
        guide_loss = self.guide.slow_step_loss(self.family, tokens, self.elbo)
        if guide_loss is not None:  # the guide's own objective for its global parameters
            objective = objective + guide_loss
        objective = objective / n_tokens
        if not torch.isfinite(objective):
            raise DivergedError(f"slow step: the ELBO loss is {objective.item()}; lower the slow "
                                f"learning rate (--lr {self.slow.lr}) or check the prior.")
        if last_backward is not None:
            last_backward()
        objective.backward()
        inner = torch.zeros(k, dtype=torch.float64)
        inner[:len(inner_losses)] = torch.tensor(inner_losses, dtype=torch.float64)
        masked = is_masked(tokens[:, 1:]).sum()
        head = torch.stack([neg_elbo.detach(), -terms.reconstruction.detach().sum(),
                            terms.kl.detach().sum(), masked.to(neg_elbo.dtype)]).double().cpu()
        return torch.cat([head, inner])  # (4 + k,)


@dataclass
class Shard:
    """This process's rows of a data-parallel global batch, and how the ranks sum tensors.

    Attributes:
        offset: The first global row this process holds.
        rows: Sequences in the global batch.
        reducer: Sums tensors and gradients over the ranks in place and clips the gradients'
            global norm (`ltm.training.DistContext`, or its sharded counterpart under FSDP); None
            on one process.
    """

    offset: int
    rows: int
    reducer: object | None = None

    def sum_(self, tensor: torch.Tensor) -> None:
        if self.reducer is not None:
            self.reducer.sum_(tensor, "the slow step's loss all-reduce")

    def sum_grads(self, params: list[nn.Parameter]) -> None:
        if self.reducer is not None:
            self.reducer.sum_grads(params)

    def last_backward(self) -> None:
        """The next backward pass is the step's last (a sharded model reduces its gradients in it)."""
        if self.reducer is not None:
            self.reducer.last_backward()

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the summed gradients to a global 2-norm of `max_norm`; returns the norm before."""
        if self.reducer is None:
            return nn.utils.clip_grad_norm_(params, max_norm)
        return self.reducer.clip_grad_norm_(params, max_norm)


@contextlib.contextmanager
def rewinding_rng(device: torch.device):
    """Yield `rewind()`, which sets the global RNG (and `device`'s) back to where it stood on
    entry: micro-batches then draw from the same stream, each keeping its own rows."""
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def rewind() -> None:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
    yield rewind
