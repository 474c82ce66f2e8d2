"""Cost of one inner (fast) step of the LTM: the Pyro program against the same loss in plain torch.

One inner step = one ELBO evaluation + gradient with respect to the local guide tensors + Adam step.
Three paths, timed round-robin in one run (order rotated each repeat, warm-up first):

  pyro       `ltm.inference.fit_local` as the trainer runs it: `LatentELBO().differentiable_loss`,
             `torch.autograd.grad` w.r.t. the local tensors only, Pyro validation off.
  plain      the identical loss without Pyro: z = loc + exp(log_scale) * eps, fused cross-entropy
             summed, analytic KL(N(loc, scale) || N(0, 1)) summed; same gradients, same Adam.
  published  the Pyro step with decoder gradients accumulated into `.grad` (full backward),
             `InnerLoopConfig(accumulate_decoder_grads=True)`, as the published code does.

Each repeat runs a whole inner loop of K steps per path (fresh guide tensors and optimiser, as per
batch) and records its time / K; the table shows medians over the repeats. Before timing, the pyro
and plain losses are checked equal step by step for one shared noise draw (`freeze_noise`).

Run:  python bench/inner_step.py            (about a minute on 2 idle CPU cores)
      python bench/inner_step.py --quick    (smoke run)
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _args import bench_parser

from ltm.inference import InnerLoopConfig, LocalGaussianGuide, fit_local
from ltm.inference.inner_loop import FAST_OPTIMIZERS
from ltm.inference.schedules import inner_lr
from ltm.models import DecoderConfig, LatentThoughtModel


def plain_fit(ltm: LatentThoughtModel, tokens: torch.Tensor, cfg: InnerLoopConfig,
              noise: torch.Tensor | None = None) -> list[float]:
    """`fit_local` with a `LocalGaussianGuide` and a standard-normal prior, written in plain torch."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
    loc = torch.zeros((tokens.shape[0],) + tuple(ltm.prior.event_shape),
                      requires_grad=True)  # (B, N, D), the guide's init: loc 0, scale 1
    log_scale = torch.zeros_like(loc, requires_grad=True)  # (B, N, D)
    params = [loc, log_scale]
    opt = FAST_OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr)
    losses = []
    for k in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = inner_lr(k, cfg.steps, cfg.lr, cfg.schedule)
        eps = torch.randn_like(loc) if noise is None else noise  # (B, N, D)
        scale = log_scale.exp()  # (B, N, D)
        z = loc + scale * eps  # (B, N, D)
        logits = ltm.decoder(inputs, latents=z)  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")  # ()
        kl = (0.5 * (loc.square() + scale.square() - 1) - log_scale).sum()  # ()
        loss = nll + kl
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def check_same_loss(ltm, guide, tokens, cfg: InnerLoopConfig, rtol: float = 1e-4) -> None:
    """Pyro and plain losses agree at every inner step for one shared noise draw."""
    noise = torch.randn((tokens.shape[0],) + tuple(ltm.prior.event_shape),
                        generator=torch.Generator().manual_seed(1))  # (B, N, D)
    frozen = dataclasses.replace(cfg, reuse_noise=True)
    pyro_losses = fit_local(ltm, guide, tokens, frozen, noise=noise)
    plain_losses = plain_fit(ltm, tokens, frozen, noise=noise)
    for k, (a, b) in enumerate(zip(pyro_losses, plain_losses, strict=True)):
        assert abs(a - b) <= rtol * abs(b), f"inner step {k + 1}: pyro loss {a} != plain loss {b}"
    assert all(p.grad is None for p in ltm.parameters()), "local-only path wrote decoder grads"
    print(f"losses equal (rtol {rtol:g}) over {cfg.steps} steps: pyro {pyro_losses[0]:.4f} "
          f"plain {plain_losses[0]:.4f} at step 1, {pyro_losses[-1]:.4f} {plain_losses[-1]:.4f} "
          f"at step {cfg.steps}")


def main() -> None:
    ap = bench_parser(__doc__, d_model=128, layers=2, batch=8, seq_len=128, repeats=30, warmup=3)
    ap.add_argument("--latents", type=int, default=8)
    ap.add_argument("--inner-steps", type=int, default=8)
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.inner_steps = 3, 1, 2

    torch.manual_seed(0)
    cfg = DecoderConfig(d_model=args.d_model, n_layer=args.layers, n_latent=args.latents,
                        block_size=args.seq_len)
    ltm = LatentThoughtModel.build(cfg, "standard_normal")
    guide = LocalGaussianGuide()
    tokens = torch.randint(cfg.vocab_size, (args.batch, args.seq_len + 1))  # (B, T+1)
    local = InnerLoopConfig(steps=args.inner_steps)
    full = InnerLoopConfig(steps=args.inner_steps, accumulate_decoder_grads=True)
    print(f"d_model={cfg.d_model} layers={cfg.n_layer} V={cfg.vocab_size} B={args.batch} "
          f"T={args.seq_len} N_z={cfg.n_latent} K={args.inner_steps} repeats={args.repeats} "
          f"threads={torch.get_num_threads()} torch {torch.__version__}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"warning: load average {load:.1f} on {cores} cores; other processes skew the timings")
    check_same_loss(ltm, guide, tokens, local)

    paths = {
        "pyro": lambda: fit_local(ltm, guide, tokens, local),
        "plain": lambda: plain_fit(ltm, tokens, local),
        "published": lambda: fit_local(ltm, guide, tokens, full),
    }
    names = list(paths)
    ms = {name: [] for name in names}
    for r in range(args.warmup + args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate so no path always leads
        for name in order:
            t0 = time.perf_counter()
            paths[name]()
            elapsed = (time.perf_counter() - t0) * 1e3 / args.inner_steps
            ltm.zero_grad(set_to_none=True)  # drop the published path's grads, outside the timer
            if r >= args.warmup:
                ms[name].append(elapsed)

    med = {name: statistics.median(ms[name]) for name in names}
    print(f"\n{'path':<10} {'ms/step':>8} {'min':>8} {'x plain':>8}")
    for name in names:
        print(f"{name:<10} {med[name]:8.2f} {min(ms[name]):8.2f} {med[name] / med['plain']:8.2f}")
    print(f"\nfull-grad/local-grad (published/pyro) ratio: {med['published'] / med['pyro']:.2f}")
    print(f"pyro/plain ratio: {med['pyro'] / med['plain']:.2f}")


if __name__ == "__main__":
    main()
