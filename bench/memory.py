"""Peak memory of one training step with the output head fused (chunked cross-entropy) or not, and
the time of an LTM outer step against the published code's behaviour.

At vocab 50258 a (B, T, V) logits tensor of B 16, T 128 takes 0.4 GB in fp32, and its gradient as
much again: far more than a d 128, 2-layer model. The fused head (`ltm.models.fused_cross_entropy`)
scores the rows in chunks and never holds them all.

Memory: one training step (`DualRateOptimizer.step`: for the LTM its inner loop of K steps, then
the slow step; for vanilla the slow step, its inner loop being empty) per configuration, each in a
fresh subprocess that builds the model, a random batch and the optimiser, runs one warm-up step
(so AdamW's state and one-time buffers exist) and then measures one more step:

  cpu   the peak resident set during the step minus the resident set just before it (VmHWM minus
        VmRSS in /proc/self/status; VmHWM is reset by writing 5 to /proc/self/clear_refs, after
        `malloc_trim` returned freed heap). Where clear_refs cannot be written, the first step's
        rise of `ru_maxrss` over the resident set before it (AdamW's state included) instead.
        The subprocesses run with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_),
        so that every freed tensor goes back to the system at once and the resident set follows
        the live tensors; with glibc's default (`--default-malloc`) it also counts freed memory
        the allocator keeps, which depends on the order of earlier allocations (the inner loop's).
  cuda  `torch.cuda.max_memory_allocated()` during the step minus `memory_allocated()` before it.

  vanilla today   the vanilla decoder scored through full logits (`MaterialisedLogits()`, the path
                  before the fused head)
  vanilla fused   the vanilla decoder, fused head (the default)
  ltm today       the LTM, N_z latents of width d_latent, local Gaussian guide, full logits
  ltm fused       the same, fused head

With `--checkpointing` the memory runs are instead the fused vanilla and LTM steps without and
with activation checkpointing (`--activation-checkpointing`: each block recomputed in the backward
pass, `vanilla ckpt`, `ltm ckpt`), and the last line gives ckpt/plain (target <= 0.6 at d 512,
8 layers, T 512).

Time: one LTM outer step (inner loop of K steps + slow step) at the published configuration,
timed round-robin in this process (order rotated each repeat, warm-up first), medians, in CPU
seconds of this process (`--wall`: wall-clock seconds), one thread:

  ltm             default inner loop (fresh noise per step, local-only gradients), fused head
  ltm today       the same through full logits
  published       `InnerLoopConfig(reuse_noise=True, accumulate_decoder_grads=True)`, fused head

Last line: vanilla fused/today memory (target <= 0.5), ltm/vanilla fused memory (target <= 1.2),
ltm/published step time (target <= 0.7).

Run:  OMP_NUM_THREADS=1 python bench/memory.py        (10-15 minutes on a shared 2-core CPU)
      python bench/memory.py --inner-steps 16        (memory with the published K as well)
      python bench/memory.py --quick                 (smoke run: tiny sizes)
      python bench/memory.py --checkpointing --d-model 512 --layers 8 --heads 8 --seq-len 512 \
          --batch 4 --d-latent 512 --no-time        (activation checkpointing's saving)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from _args import bench_parser
from _memory_probe import maxrss_kib, peak_kib, reset_peak, rss_kib

from ltm.inference import (
    DualRateOptimizer,
    EmptyGuide,
    InnerLoopConfig,
    LocalGaussianGuide,
    SlowConfig,
)
from ltm.models import DecoderConfig, LatentThoughtModel
from ltm.models.likelihood import MaterialisedLogits
from ltm.ponder.vanilla import VanillaDecoder

MEMORY_RUNS = ["vanilla today", "vanilla fused", "ltm today", "ltm fused"]
CHECKPOINTING_RUNS = ["vanilla fused", "vanilla ckpt", "ltm fused", "ltm ckpt"]
TIME_MODES = ["ltm", "ltm today", "published"]


def build(family: str, args, inner: InnerLoopConfig, device: str):
    """(optimiser, batch (B, T+1)) for `family` ("ltm" or "vanilla") at the sizes of `args`."""
    torch.manual_seed(0)
    latent = dict(n_latent=args.latents, d_latent=args.d_latent) if family == "ltm" else {}
    cfg = DecoderConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=args.layers,
                        n_head=args.heads, block_size=args.seq_len, **latent)
    if family == "ltm":
        model, guide = LatentThoughtModel.build(cfg), LocalGaussianGuide()
    else:
        model, guide, inner = VanillaDecoder.from_config(cfg), EmptyGuide(), InnerLoopConfig(steps=0)
    model.to(device)
    tokens = torch.randint(args.vocab, (args.batch, args.seq_len + 1), device=device)  # (B, T+1)
    slow = SlowConfig(lr=1e-4, warmup_steps=0, decay_steps=1000)
    return DualRateOptimizer(model, guide, inner, slow), tokens


def child(run: str, args) -> dict:
    """Peak memory (bytes) of one training step of `run` above the memory held before it."""
    family, mode = run.split()
    device = args.device
    opt, tokens = build(family, args, InnerLoopConfig(steps=args.inner_steps), device)
    opt.family.decoder.checkpoint_blocks = mode == "ckpt"
    path = MaterialisedLogits() if mode == "today" else contextlib.nullcontext()
    with path:
        if device == "cuda":
            opt.step(tokens)
            torch.cuda.synchronize()
            gc.collect()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            opt.step(tokens)
            torch.cuda.synchronize()
            return {"peak": torch.cuda.max_memory_allocated() - before, "how": "cuda allocated"}
        before_kb = rss_kib()
        if args.warmup_step:
            opt.step(tokens)
            if reset_peak():
                before_kb = rss_kib()
                opt.step(tokens)
                return {"peak": (peak_kib() - before_kb) * 1024, "how": "VmHWM - VmRSS"}
            raise SystemExit("cannot reset VmHWM (/proc/self/clear_refs); run with --no-warmup-step")
        opt.step(tokens)
        return {"peak": (maxrss_kib() - before_kb) * 1024, "how": "first step: ru_maxrss - VmRSS"}


def memory_runs(args) -> list[str]:
    return CHECKPOINTING_RUNS if args.checkpointing else MEMORY_RUNS


def measure_memory(args) -> dict[str, dict]:
    """Run each configuration in a fresh subprocess; {run: {"peak": bytes, "how": str}}."""
    out = {}
    env = dict(os.environ)
    if not args.default_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    for run in memory_runs(args):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", run] + args.passthrough
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{run}: {proc.stderr[-2000:]}")
        out[run] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def measure_time(args) -> dict[str, list[float]]:
    """Seconds per LTM outer step in each mode (after the warm-up), timed round-robin."""
    clock = time.perf_counter if args.wall else time.process_time
    inner = {"ltm": InnerLoopConfig(steps=args.time_inner_steps),
             "published": InnerLoopConfig(steps=args.time_inner_steps, reuse_noise=True,
                                          accumulate_decoder_grads=True)}
    inner["ltm today"] = inner["ltm"]
    runs = {mode: build("ltm", args, inner[mode], args.device) for mode in TIME_MODES}
    seconds = {mode: [] for mode in TIME_MODES}
    for r in range(args.warmup + args.repeats):
        order = TIME_MODES[r % len(TIME_MODES):] + TIME_MODES[:r % len(TIME_MODES)]
        for mode in order:
            opt, tokens = runs[mode]
            path = MaterialisedLogits() if mode.endswith("today") else contextlib.nullcontext()
            with path:
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t0 = clock()
                opt.step(tokens)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                elapsed = clock() - t0
            if r >= args.warmup:
                seconds[mode].append(elapsed)
    return seconds


def parse_args(argv=None):
    ap = bench_parser(__doc__, vocab=50258, d_model=128, layers=2, heads=4, batch=16, seq_len=128,
                      repeats=3, warmup=1,
                      device="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--latents", type=int, default=16, help="LTM latent vectors N_z")
    ap.add_argument("--d-latent", type=int, default=128)
    ap.add_argument("--inner-steps", type=int, default=4, help="K of the memory runs' LTM step")
    ap.add_argument("--time-inner-steps", type=int, default=16, help="K of the timed LTM step")
    ap.add_argument("--wall", action="store_true", help="time wall-clock instead of CPU seconds")
    ap.add_argument("--no-time", action="store_true", help="memory only")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's dynamic mmap threshold (RSS then counts cached free memory)")
    ap.add_argument("--no-warmup-step", dest="warmup_step", action="store_false",
                    help="measure the first step (ru_maxrss; AdamW's state included)")
    ap.add_argument("--checkpointing", action="store_true",
                    help="memory with and without activation checkpointing instead of full logits")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.vocab, args.d_model, args.layers, args.batch, args.seq_len = 2048, 32, 2, 4, 32
        args.latents, args.d_latent, args.inner_steps, args.time_inner_steps = 4, 16, 2, 2
        args.repeats, args.warmup = 1, 1
    args.passthrough = list(argv if argv is not None else sys.argv[1:])
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    print(f"vocab={args.vocab} d_model={args.d_model} layers={args.layers} B={args.batch} "
          f"T={args.seq_len} N_z={args.latents}x{args.d_latent} device={args.device} "
          f"threads={torch.get_num_threads()} torch {torch.__version__}")
    logits_mb = args.batch * args.seq_len * args.vocab * 4 / 2**20
    print(f"(B, T, V) fp32 logits: {logits_mb:.0f} MiB")

    mem = measure_memory(args)
    mb = {run: m["peak"] / 2**20 for run, m in mem.items()}
    malloc = "glibc default malloc" if args.default_malloc else "MALLOC_MMAP_THRESHOLD_=65536"
    print(f"\npeak memory of one training step above what is held before it "
          f"({mem['vanilla fused']['how']}, {malloc}; ltm K={args.inner_steps})")
    print(f"{'run':<14} {'MiB':>9} {'x vanilla fused':>16}")
    for run in memory_runs(args):
        print(f"{run:<14} {mb[run]:9.1f} {mb[run] / mb['vanilla fused']:16.2f}")
    if args.checkpointing:
        print(f"memory ratio with/without activation checkpointing: vanilla "
              f"{mb['vanilla ckpt'] / mb['vanilla fused']:.3f}, ltm {mb['ltm ckpt'] / mb['ltm fused']:.3f} "
              f"(<= 0.6)")
        return
    fused_today = mb["vanilla fused"] / mb["vanilla today"]
    ltm_vanilla = mb["ltm fused"] / mb["vanilla fused"]
    print(f"vanilla fused/today: {fused_today:.2f} (target <= 0.5); ltm today/fused: "
          f"{mb['ltm today'] / mb['ltm fused']:.2f}")

    line = (f"memory ratio vanilla fused/today {fused_today:.3f} (<= 0.5), ltm/vanilla fused "
            f"{ltm_vanilla:.3f} (<= 1.2)")
    if not args.no_time:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        if load > 0.5 * cores:
            print(f"warning: load average {load:.1f} on {cores} cores; other processes skew the timings")
        seconds = measure_time(args)
        med = {mode: statistics.median(s) for mode, s in seconds.items()}
        unit = "wall s" if args.wall else "cpu s"
        print(f"\nLTM outer step, K={args.time_inner_steps}, {args.repeats} repeats ({unit}, median)")
        print(f"{'mode':<12} {unit:>8} {'min':>8} {'x published':>12}")
        for mode in TIME_MODES:
            print(f"{mode:<12} {med[mode]:8.3f} {min(seconds[mode]):8.3f} "
                  f"{med[mode] / med['published']:12.3f}")
        print(f"fused speed-up of the ltm step (today/fused): {med['ltm today'] / med['ltm']:.3f}")
        line += f"; step time ratio ltm/published {med['ltm'] / med['published']:.3f} (<= 0.7)"
    print(line)


if __name__ == "__main__":
    main()
