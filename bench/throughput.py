"""Training throughput of every model family in fp32 and bf16: tokens/s, achieved FLOP/s against
this machine's measured GEMM peak, and the peak memory of one training step.

Every family (vanilla, ltm, ponderlm2, ponderlm, adaptive_cot, pause, looped) is built as
`ltm.training.build` builds it (its config section at its defaults, fresh weights, same seed, one
decoder size; PonderLM-2's Jacobi sweeps J fixed, `--sweeps`, instead of drawn per step). One
training step on a (B, T+1) batch:

  ltm       `DualRateOptimizer.step(batch)`: K inner steps on the local guide, then the slow step
  others    `LatentELBO().differentiable_loss(family.model, EmptyGuide(), batch)` (the summed
            cross-entropy, plus the router loss for adaptive_cot) / tokens, backward, AdamW step

bf16 runs the whole step under `ltm.training.precision.autocast("bf16", device)` (matrix multiplies
in bf16, fp32 master weights and losses), exactly as the trainer does; `has_fast_bf16` (native bf16
arithmetic: CUDA, or a CPU with AVX512-BF16/AMX) is printed. Where bf16 is not native, that context
computes the bf16 products on the fp32 kernel (`Fp32KernelForBf16`: same numbers, not torch's slow
bf16 emulation), so the bf16 rows there measure autocast's casts on fp32 arithmetic, not bf16
hardware. `--bf16 vanilla` times bf16 for vanilla only (the headline ratio) to save time.

Timing: one warm-up step per (family, precision), then `--repeats` rounds over all of them in a
rotated order (synchronised on CUDA); medians. Tokens/s = B*T / step time.

FLOPs per step, counted analytically per training token (T = the training sequence length):
  one vanilla-shaped pass, forward + backward:  6N + 12 L T D
    N = the decoder's matrix parameters applied at every position: self-attention (qkv, out),
        SwiGLU (gate, up, down), for ltm also the cross-attention's query and output projections,
        plus the tied output head's V*D (the embedding lookup, the norms and ltm's latent
        key/value projection, which sees the N_z latents only, are not counted);
    12 L T D: attention scores and values (PaLM's count: 2 matmuls of 2 T D per layer forward,
        x3 with the backward, no discount for the causal mask).
  ltm:        K (4N + 12 L T D) + (6N + 12 L T D): each inner step is a forward (2N) and a backward
              to the activations only (2N, no weight gradients; attention has no weights, so its
              full 12 L T D); the slow step is a full training pass.
  ponderlm2:  1 + (J+1)(K+1) passes (an initial pass over T slots, J sweeps and a final pass over
              (K+1)T slots; not its decode cost `cost_per_token` = K+1).
  the others: `Family.cost_per_token` passes, read after a training forward: P+1 (pause), L
              (looped), S+1 (ponderlm), 1 + computed latent steps per token (adaptive_cot).
  Slot families attend over g*T slots; the attention term is scaled like the rest (its quadratic
  growth ignored: about 4% of a pass at d=512, T=128). "stated" in the table is FLOPs over
  vanilla's. Achieved FLOP/s = FLOPs / median step time, also as a fraction of the GEMM peak.

GEMM peak, same run, `--threads` threads: torch.matmul of square (n, n) matrices, n = 512, 1024,
1536, 2048, in the three layouts a Linear layer uses (x @ W.T forward, g @ W input gradient,
g.T @ x weight gradient), median of `--gemm-repeats` products after one warm-up; the peak is the
best (layout, n). Each precision's products run inside the same `autocast(precision, device)`
context as its training steps, so they get the same kernels. Where bf16 is not native, torch's own
bf16 kernels (no autocast) are also measured, for information. A size whose warm-up product takes
over `--gemm-max-s` seconds is kept as one sample and larger sizes are skipped (torch's emulated
bf16 runs some layouts at well under 1 GFLOP/s).

Peak memory of one training step, measured before anything is timed, in a fresh subprocess per
(family, precision) that builds the family, its optimiser and the batch, then takes one step
(which allocates the gradients, AdamW's moments, the activations and workspaces):
  CPU   peak RSS during the step minus the RSS after building (/proc/self/statm). The peak is the
        kernel's high-water mark VmHWM, reset to the current RSS just before the step
        (/proc/self/clear_refs): `ru_maxrss` cannot serve here because Linux carries the parent's
        high-water mark into a child across exec, so a child of a large process reports at least
        the parent's RSS. Without /proc the script falls back to ru_maxrss (then marked "~").
  CUDA  torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated
        after building.

Run:  OMP_NUM_THREADS=1 python bench/throughput.py     (about 8-10 minutes on 2 AVX2 CPU cores
                                                        shared with other jobs; --bf16 vanilla
                                                        saves about a third)
      python bench/throughput.py --device cuda
      python bench/throughput.py --compile            (adds vanilla with compiled decoder blocks)
      python bench/throughput.py --quick              (smoke run, tiny sizes, about 30 s)
The last line is vanilla's bf16/fp32 speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from _args import bench_parser
from _memory_probe import maxrss_kib, peak_kib, reset_peak, rss_kib

from ltm.inference import DualRateOptimizer, EmptyGuide, LatentELBO
from ltm.inference.guides.base import pyro_guide
from ltm.training.build import build_model, build_run_guide
from ltm.training.config import TrainConfig
from ltm.training.precision import autocast, compile_decoder, has_fast_bf16

FAMILIES = ("vanilla", "ltm", "ponderlm2", "ponderlm", "adaptive_cot", "pause", "looped")
COMPILED = "vanilla compiled"
LAYOUTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "x@W.T": lambda a, b: a @ b.T,  # a Linear's forward
    "g@W": lambda a, b: a @ b,  # its input gradient
    "g.T@x": lambda a, b: a.T @ b,  # its weight gradient
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_PEAK, TARGET_SPEEDUP = 0.5, 1.5  # vanilla fp32 >= 50% of the GEMM peak; bf16 >= 1.5x fp32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the families and their training step ------------------------------------------------------


@dataclass
class Trainee:
    """A family with its batch and one training step.

    Attributes:
        family: The model family (train mode).
        step: Runs one training step (call it inside the precision's autocast).
        n_matrix: N, the matrix parameters applied at every position (see the module docstring).
    """

    family: torch.nn.Module
    step: Callable[[], object]
    n_matrix: int


def train_config(args, name: str) -> TrainConfig:
    """The run config of family `name` at the bench's sizes (PonderLM-2's J fixed)."""
    sweeps = {"jacobi_sweeps": args.sweeps, "max_jacobi_sweeps": args.sweeps}
    return TrainConfig.from_dict({"model": name, "d_model": args.d_model, "n_layer": args.layers,
                                  "n_head": args.heads, "block_size": args.seq_len,
                                  "inner_steps": args.inner_steps, "ponderlm2": sweeps})


def matrix_params(decoder: torch.nn.Module) -> int:
    """N: the blocks' matrices that act on every position, plus the tied head's V*D."""
    blocks = sum(p.numel() for name, p in decoder.blocks.named_parameters()
                 if p.dim() == 2 and not name.endswith("cross.kv.weight"))  # kv sees the latents only
    return blocks + decoder.embed.weight.numel()


def build(args, name: str, device: torch.device) -> Trainee:
    """Family `name` (fresh weights, seed 0), a (B, T+1) batch and its training step."""
    cfg = train_config(args, "vanilla" if name == COMPILED else name)
    torch.manual_seed(0)
    family = build_model(cfg, args.vocab).to(device).train()
    if name == COMPILED:
        compile_decoder(family)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=g).to(device)  # (B, T+1)
    if name == "ltm":
        guide = build_run_guide(cfg, family).to(device)
        opt = DualRateOptimizer(family, guide, cfg.inner_config(), cfg.slow_config())
        return Trainee(family, lambda: opt.step(tokens), matrix_params(family.decoder))
    elbo, guide, n_tokens = LatentELBO(), EmptyGuide(), tokens[:, 1:].numel()
    slow = cfg.slow
    adamw = torch.optim.AdamW(family.parameters(), lr=slow.lr, betas=(slow.beta1, slow.beta2),
                              weight_decay=slow.weight_decay)

    def step() -> None:
        q = pyro_guide(guide, family.prior)
        loss = elbo.differentiable_loss(family.model, q, tokens) / n_tokens  # ()
        loss.backward()
        adamw.step()
        adamw.zero_grad(set_to_none=True)

    return Trainee(family, step, matrix_params(family.decoder))


def step_flops(args, name: str, trainee: Trainee) -> tuple[float, str]:
    """FLOPs of one training step and how the passes were counted (after a training step)."""
    n, attn = trainee.n_matrix, 12 * args.layers * args.seq_len * args.d_model
    tokens = args.batch * args.seq_len
    if name == "ltm":
        k = args.inner_steps
        return tokens * (k * (4 * n + attn) + 6 * n + attn), f"K={k}: {k}x(4N+A) + 6N+A"
    if name == "ponderlm2":
        k, j = trainee.family.thoughts, args.sweeps
        passes = 1 + (j + 1) * (k + 1)
        return tokens * passes * (6 * n + attn), f"1+(J+1)(K+1) = {passes}, J={j} K={k}"
    passes = float(trainee.family.cost_per_token)
    return tokens * passes * (6 * n + attn), f"cost_per_token {passes:.2f}"


# -- peak memory in a fresh process ------------------------------------------------------------


def memory_child(args) -> None:
    """Build one family + batch, take one training step, print {"base": MiB, "step": MiB, ...}."""
    device = torch.device(args.device)
    trainee = build(args, args.memory_child, device)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
        with autocast(args.precision, device):
            trainee.step()
        sync(device)
        record = {"base": base, "step": torch.cuda.max_memory_allocated(device) / 2**20 - base,
                  "how": "cuda"}
    else:
        procfs = os.path.exists("/proc/self/status")
        exact = procfs and reset_peak()
        base = (rss_kib() if procfs else maxrss_kib()) / 2**10
        with autocast(args.precision, device):
            trainee.step()
        peak = (peak_kib() if exact else maxrss_kib()) / 2**10
        record = {"base": base, "step": peak - base, "how": "VmHWM" if exact else "ru_maxrss"}
    print(json.dumps(record))


def child_flags(args) -> list[str]:
    """The size flags a memory child needs to build the same model and batch."""
    return ["--d-model", str(args.d_model), "--layers", str(args.layers), "--heads", str(args.heads),
            "--vocab", str(args.vocab), "--batch", str(args.batch), "--seq-len", str(args.seq_len),
            "--inner-steps", str(args.inner_steps), "--sweeps", str(args.sweeps),
            "--threads", str(args.threads), "--device", args.device]


def measure_memory(args, cells: list[tuple[str, str]]) -> dict[tuple[str, str], dict | str]:
    """{(family, precision): the child's record, or its error} from one fresh process each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def run(cell: tuple[str, str]) -> dict | str:
        name, precision = cell
        cmd = [sys.executable, __file__, "--memory-child", name, "--precision", precision,
               *child_flags(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        return dict(zip(cells, pool.map(run, cells), strict=True))


# -- GEMM peak ---------------------------------------------------------------------------------


def gemm_peak(dtype: torch.dtype, context: Callable[[], contextlib.AbstractContextManager],
              args, device: torch.device) -> dict[str, tuple[float, int]]:
    """{layout: (best GFLOP/s, its n)} of square products under `context()`, median over the
    repeats after a warm-up; sizes past the first slow one (warm-up > --gemm-max-s) skipped."""
    best, x = {}, torch.ones(8, 8, dtype=dtype, device=device)  # (8, 8)
    with context():  # one-time costs (lazy initialisation) outside the timing
        for product in LAYOUTS.values():
            product(x, x)
    for layout, product in LAYOUTS.items():
        for n in args.gemm_sizes:
            g = torch.Generator(device=device).manual_seed(n)
            a = torch.randn(n, n, generator=g, device=device).to(dtype)  # (n, n)
            b = torch.randn(n, n, generator=g, device=device).to(dtype)  # (n, n)
            times = []
            with context():
                for _ in range(1 + args.gemm_repeats):
                    sync(device)
                    start = time.perf_counter()
                    product(a, b)
                    sync(device)
                    times.append(time.perf_counter() - start)
                    if times[0] > args.gemm_max_s:  # too slow to repeat: keep the one sample
                        break
            rate = 2 * n**3 / statistics.median(times[1:] or times) / 1e9
            if rate > best.get(layout, (0.0, 0))[0]:
                best[layout] = (rate, n)
            if times[0] > args.gemm_max_s:
                break
    return best


def measure_peaks(args, device: torch.device, fast: bool) -> dict[str, float]:
    """Print the GEMM rates by layout; return the peak GFLOP/s per precision (in its autocast)."""
    runs = {p: (DTYPES[p], lambda p=p: autocast(p, device)) for p in DTYPES}
    if not fast:  # torch's own bf16 kernels, which the library's autocast avoids here
        runs["bf16 (torch's kernels, no autocast)"] = (torch.bfloat16, contextlib.nullcontext)
    peak = {}
    for label, (dtype, context) in runs.items():
        best = gemm_peak(dtype, context, args, device)
        peak[label] = max(r for r, _ in best.values())
        layouts = ", ".join(f"{lay} {r:.1f} (n={n})" for lay, (r, n) in best.items())
        print(f"GEMM {label} GFLOP/s by layout (best n): {layouts}")
    return peak


# -- timing --------------------------------------------------------------------------------------


def timed_step(trainee: Trainee, precision: str, device: torch.device) -> float:
    """Seconds of one training step under `precision`."""
    sync(device)
    start = time.perf_counter()
    with autocast(precision, device):
        trainee.step()
    sync(device)
    return time.perf_counter() - start


def time_cells(args, cells: list[tuple[str, str]], trainees: dict[str, Trainee], device: torch.device
               ) -> tuple[dict, dict, dict]:
    """Warm-up, then round-robin repeats (order rotated each round).

    Returns:
        Median seconds per (family, precision); the tracebacks of cells that failed in the warm-up;
        the first step's seconds (compile + run) of the compiled family per precision.
    """
    failed, compile_s = {}, {}
    for cell in cells:  # a compiled family's first step per precision compiles
        for i in range(max(args.warmup, cell[0] == COMPILED)):
            try:
                elapsed = timed_step(trainees[cell[0]], cell[1], device)
            except Exception:  # noqa: BLE001 - a failing family is a measured fact, reported
                failed[cell] = traceback.format_exc()
                break
            if cell[0] == COMPILED and i == 0:
                compile_s[cell[1]] = elapsed
    ok = [c for c in cells if c not in failed]
    times = {c: [] for c in ok}
    for r in range(args.repeats):
        for cell in ok[r % len(ok):] + ok[:r % len(ok)]:
            times[cell].append(timed_step(trainees[cell[0]], cell[1], device))
    return {c: statistics.median(t) for c, t in times.items()}, failed, compile_s


# -- the report ----------------------------------------------------------------------------------


def memory_text(record: dict | str | None) -> str:
    """A table cell: the step's MiB ("~": ru_maxrss fallback), "-" unmeasured, "failed"."""
    if record is None:
        return "-"
    if not isinstance(record, dict):
        return "failed"
    return f"{record['step']:.0f}" + ("~" if record["how"] == "ru_maxrss" else "")


def print_table(args, cells, med, failed, flops, peak, memory) -> None:
    """One row per (family, precision)."""
    head = (f"{'family':<17}{'prec':<6}{'ms/step':>10}{'tok/s':>9}{'x vanilla':>10}{'GFLOP/step':>11}"
            f"{'stated':>8}{'GFLOP/s':>9}{'% peak':>8}{'bf16 x':>8}{'step MiB':>10}  passes counted")
    print(head)
    print("-" * len(head))
    tokens = args.batch * args.seq_len
    for name, precision in cells:
        cell, mem = (name, precision), memory_text(memory.get((name, precision)))
        if cell in failed:
            print(f"{name:<17}{precision:<6}{'failed (traceback below)':>45}{mem:>45}")
            continue
        t, (fl, how) = med[cell], flops[name]
        ref, fp32 = med.get(("vanilla", precision)), med.get((name, "fp32"))
        rel = f"{t / ref:.2f}" if ref else "-"
        speed = f"{fp32 / t:.2f}" if precision == "bf16" and fp32 else "-"
        print(f"{name:<17}{precision:<6}{t * 1e3:>10.1f}{tokens / t:>9.0f}{rel:>10}{fl / 1e9:>11.2f}"
              f"{fl / flops['vanilla'][0]:>8.2f}{fl / t / 1e9:>9.2f}{fl / t / 1e9 / peak[precision]:>8.0%}"
              f"{speed:>8}{mem:>10}  {how}")


def print_notes(memory, failed, peak) -> None:
    """The peaks, what the memory column measured, and the tracebacks of failed cells."""
    for label, rate in peak.items():
        print(f"GEMM peak {label}: {rate:.2f} GFLOP/s")
    if memory:
        base = {c: m["base"] for c, m in memory.items() if isinstance(m, dict)}
        how = {m["how"] for m in memory.values() if isinstance(m, dict)}
        print(f"step MiB: one training step's peak above the process after building family + optimiser"
              f" + batch ({'/'.join(sorted(how))}; a fresh process each); after building: "
              + ", ".join(f"{n} {p} {b:.0f}" for (n, p), b in base.items()) + " MiB")
        for cell, m in memory.items():
            if not isinstance(m, dict):
                print(f"memory of {cell[0]} {cell[1]} failed: {m}")
    for (name, precision), tb in failed.items():
        print(f"\n{name} {precision} failed:\n{tb}")


def main() -> None:
    ap = bench_parser(__doc__, d_model=512, layers=4, heads=8, vocab=512, batch=8, seq_len=128,
                      repeats=2, warmup=1, threads=1)
    ap.add_argument("--inner-steps", type=int, default=4, help="ltm inner steps K per training step")
    ap.add_argument("--sweeps", type=int, default=2, help="PonderLM-2 Jacobi sweeps J (fixed)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--bf16", choices=("all", "vanilla"), default="all", help="families timed in bf16")
    ap.add_argument("--gemm-sizes", type=int, nargs="+", default=[512, 1024, 1536, 2048])
    ap.add_argument("--gemm-repeats", type=int, default=3)
    ap.add_argument("--gemm-max-s", type=float, default=2.0,
                    help="skip larger GEMM sizes once a product takes this long")
    ap.add_argument("--memory", choices=("all", "vanilla", "off"), default=None,
                    help="families whose peak memory is measured, in fresh subprocesses (default "
                         "all; vanilla with --quick)")
    ap.add_argument("--jobs", type=int, default=2, help="memory subprocesses run at a time")
    ap.add_argument("--compile", action="store_true",
                    help="also time vanilla with torch.compile'd decoder blocks")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    if args.quick:
        args.d_model, args.layers, args.heads, args.vocab, args.batch, args.seq_len = 32, 2, 2, 64, 2, 16
        args.inner_steps, args.repeats, args.gemm_sizes, args.gemm_repeats = 2, 1, [64, 128], 1
    args.memory = args.memory or ("vanilla" if args.quick else "all")
    device = torch.device(args.device)
    names = ["vanilla"] + [n for n in args.families if n != "vanilla"]
    fast = has_fast_bf16(device)
    bf16_names = names if args.bf16 == "all" else ["vanilla"]
    cells = [(n, "fp32") for n in names] + [(n, "bf16") for n in bf16_names]
    if args.compile:
        cells += [(COMPILED, "fp32"), (COMPILED, "bf16")]
    size = f"d={args.d_model}, {args.layers} layers, B {args.batch}, T {args.seq_len}"
    print(f"{size}, {args.heads} heads, vocab {args.vocab}; ltm K={args.inner_steps}, PonderLM-2 "
          f"J={args.sweeps}; {args.repeats} repeats after {args.warmup} warm-up; "
          f"{torch.get_num_threads()} thread(s), {args.device}, torch {torch.__version__}")
    print(f"has_fast_bf16({args.device}): {fast}" + ("" if fast else " (bf16 not native: see the "
                                                     "docstring for what the bf16 rows measure)"))
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"warning: load average {load:.1f} on {cores} cores; other processes skew the timings")

    memory = {}
    if args.memory != "off":  # first, while this process is small and nothing runs beside it
        memory = measure_memory(args, [c for c in cells if c[0] != COMPILED
                                       and (args.memory == "all" or c[0] == "vanilla")])
    peak = measure_peaks(args, device, fast)
    trainees = {name: build(args, name, device) for name in dict.fromkeys(n for n, _ in cells)}
    med, failed, compile_s = time_cells(args, cells, trainees, device)
    flops = {n: step_flops(args, n, t) for n, t in trainees.items()}
    print_table(args, cells, med, failed, flops, peak, memory)
    print_notes(memory, failed, peak)

    if ("adaptive_cot", "fp32") in med:
        fam = trainees["adaptive_cot"].family
        measured = med[("adaptive_cot", "fp32")] / med[("vanilla", "fp32")]
        stated = 1.0 + fam.computed_steps
        print(f"adaptive_cot train cost (fp32): measured {measured:.2f}x vanilla, stated {stated:.2f}x "
              f"(1 + {fam.computed_steps:.2f} computed latent steps per token, l_max {fam.max_steps}); "
              f"measured/stated {measured / stated:.2f}")
    for precision, seconds in compile_s.items():
        if (COMPILED, precision) in med:
            ratio = med[("vanilla", precision)] / med[(COMPILED, precision)]
            print(f"vanilla compiled/eager speed-up ({precision}): {ratio:.2f}x; first compiled step "
                  f"(compile + run; inductor's on-disk cache may shorten it) {seconds:.2f} s, "
                  f"excluded from the timing")
    fp32_frac = flops["vanilla"][0] / med[("vanilla", "fp32")] / 1e9 / peak["fp32"]
    print(f"vanilla fp32: {fp32_frac:.0%} of the measured fp32 GEMM peak (target >= {TARGET_PEAK:.0%}): "
          f"{'PASS' if fp32_frac >= TARGET_PEAK else 'FAIL'} ({size})")
    if ("vanilla", "bf16") not in med:
        sys.exit("vanilla failed under bf16 autocast; no speed-up to report")
    speedup = med[("vanilla", "fp32")] / med[("vanilla", "bf16")]
    note = "bf16 native" if fast else f"bf16 not native on this {args.device.upper()}"
    print(f"vanilla bf16/fp32 speed-up ratio: {speedup:.2f}x (target >= {TARGET_SPEEDUP:.1f}x: "
          f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'}; {size}; {note})")


if __name__ == "__main__":
    main()
