"""The LTM outer step in bf16 against fp32, with this machine's bf16/fp32 GEMM ratio measured in
the same run.

One outer step = `DualRateOptimizer.step(batch)`: K inner steps on the local Gaussian guide, then
the slow AdamW step, at the published code's LTM configuration by default (vocab 50258, d 128,
2 layers, 4 heads, T 128, B 16, 16 latents x 128, K 16). Two copies of the model, built from the
same seed: one stepped in fp32, one under `ltm.training.precision.autocast("bf16", device)` as the
trainer runs `--precision bf16` (bf16 matrix products, fp32 weights, losses, log-probabilities and
KL; the fused head in `ltm.models.low_precision_head`; attention in fp32 on a CPU without AMX).

Timing: one warm-up step each, then `--repeats` rounds; each round steps both precisions (the
order alternating) and times the GEMM probe in both, so that the two see the same load. CPU
seconds of this process by default (`--wall`: wall-clock), `--threads` torch threads; medians.

GEMM probe: `torch.matmul` of square (n, n) matrices (`--gemm-n`) in a Linear's forward layout
(x @ W.T), each precision inside its own autocast context (the kernels the steps get), the median
of `--gemm-repeats` products per round; the ratio of the medians over all rounds.

Where bf16 is not native (no AVX512-BF16/AMX) the bf16 products run on the fp32 kernel
(`Fp32KernelForBf16`): the figures then measure the casts, not bf16 hardware.

Run:  python bench/bf16_step.py              (about 8 minutes on a shared 2-core CPU)
      python bench/bf16_step.py --quick      (smoke run: tiny sizes)
Last line: the step's bf16/fp32 speed-up (target >= 1.8 on a CPU with native bf16).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from _args import bench_parser

from ltm.inference import DualRateOptimizer, InnerLoopConfig, LocalGaussianGuide, SlowConfig
from ltm.models import DecoderConfig, LatentThoughtModel
from ltm.training.precision import autocast, has_fast_bf16

PRECISIONS = ("fp32", "bf16")
TARGET = 1.8


def build(args, device: torch.device):
    """(optimiser, batch (B, T+1)) of a fresh LTM at the sizes of `args`, seed 0."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=args.layers,
                        n_head=args.heads, block_size=args.seq_len, n_latent=args.latents,
                        d_latent=args.d_latent)
    model = LatentThoughtModel.build(cfg).to(device)
    tokens = torch.randint(args.vocab, (args.batch, args.seq_len + 1), device=device)  # (B, T+1)
    slow = SlowConfig(lr=1e-4, warmup_steps=0, decay_steps=1000)
    return DualRateOptimizer(model, LocalGaussianGuide(), InnerLoopConfig(steps=args.inner_steps),
                             slow), tokens


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_seconds(n: int, repeats: int, precision: str, device: torch.device, clock) -> float:
    """Median seconds of one (n, n) @ (n, n).T product under `precision`'s autocast."""
    a = torch.randn(n, n, device=device)  # (n, n)
    w = torch.randn(n, n, device=device)  # (n, n)
    times = []
    with autocast(precision, device):
        a @ w.T  # warm-up (and autocast's weight cast)
        for _ in range(repeats):
            sync(device)
            t0 = clock()
            a @ w.T
            sync(device)
            times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    ap = bench_parser(__doc__, vocab=50258, d_model=128, layers=2, heads=4, batch=16, seq_len=128,
                      repeats=5, warmup=1, threads=1,
                      device="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--latents", type=int, default=16, help="latent vectors N_z")
    ap.add_argument("--d-latent", type=int, default=128, help="latent width")
    ap.add_argument("--inner-steps", type=int, default=16, help="inner steps K")
    ap.add_argument("--gemm-n", type=int, default=1536, help="GEMM probe size n")
    ap.add_argument("--gemm-repeats", type=int, default=5, help="GEMM products per round")
    ap.add_argument("--wall", action="store_true", help="wall-clock instead of CPU seconds")
    args = ap.parse_args()
    if args.quick:
        args.vocab, args.batch, args.seq_len, args.latents, args.d_latent = 2048, 4, 32, 4, 16
        args.inner_steps, args.repeats, args.gemm_n, args.gemm_repeats = 2, 2, 256, 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = time.perf_counter if args.wall or device.type == "cuda" else time.process_time
    print(f"LTM outer step: vocab={args.vocab} d_model={args.d_model} layers={args.layers} "
          f"B={args.batch} T={args.seq_len} N_z={args.latents}x{args.d_latent} K={args.inner_steps}"
          f" device={args.device} threads={torch.get_num_threads()} torch {torch.__version__}")
    print(f"has_fast_bf16({args.device}): {has_fast_bf16(device)}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"warning: load average {load:.1f} on {cores} cores; other processes skew the timings")

    runs = {p: build(args, device) for p in PRECISIONS}
    step_s = {p: [] for p in PRECISIONS}
    gemm_s = {p: [] for p in PRECISIONS}
    for r in range(args.warmup + args.repeats):
        order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            opt, tokens = runs[p]
            with autocast(p, device):
                sync(device)
                t0 = clock()
                opt.step(tokens)
                sync(device)
                elapsed = clock() - t0
            if r >= args.warmup:
                step_s[p].append(elapsed)
                gemm_s[p].append(gemm_seconds(args.gemm_n, args.gemm_repeats, p, device, clock))

    unit = "wall s" if clock is time.perf_counter else "cpu s"
    flop = 2 * args.gemm_n ** 3
    print(f"\n{'precision':<10} {'step ' + unit:>12} {'min':>8} {'max':>8} {'GEMM GFLOP/s':>13}")
    for p in PRECISIONS:
        s, g = step_s[p], statistics.median(gemm_s[p])
        print(f"{p:<10} {statistics.median(s):12.3f} {min(s):8.3f} {max(s):8.3f} {flop / g / 1e9:13.1f}")
    gemm_ratio = statistics.median(gemm_s["fp32"]) / statistics.median(gemm_s["bf16"])
    step_ratio = statistics.median(step_s["fp32"]) / statistics.median(step_s["bf16"])
    print(f"bf16/fp32 GEMM ratio ({args.gemm_n}^2, x @ W.T): {gemm_ratio:.2f}x over {args.repeats} "
          f"rounds")
    verdict = "PASS" if step_ratio >= TARGET else "FAIL"
    print(f"LTM outer step bf16/fp32 speed-up ratio: {step_ratio:.2f}x (median of {args.repeats}; "
          f"target >= {TARGET}x: {verdict}; GEMM ratio {gemm_ratio:.2f}x)")


if __name__ == "__main__":
    main()
