"""What a training step of each config in configs/scale/ costs on this machine: parameters, FLOPs
per token, and one step's time, tokens/s, model FLOP utilisation and peak memory.

Each config runs in a fresh subprocess (so its peak memory is its own) at a small batch (`--batch`,
default 1; the configs' own batch is for GPUs), on random token ids of the config's vocabulary (the
tokenizer file's size, GPT-2's 50257 where it is absent), with its `--precision` (auto: bf16 where
this CPU has it natively). The process builds the run's model, guide and `DualRateOptimizer` as
`ltm.train` does, takes one warm-up step (AdamW's state, one-time buffers), then times `--steps`
steps.

  FLOPs     counted by `torch.utils.flop_counter` (matrix multiplies and attention, forward and
            backward, the inner loop included; `ltm.eval.flops`) on steps of K = 1 and K = 2 inner
            steps and extrapolated to the config's K (each inner step costs the same), divided by
            the step's B x T tokens
  time      median wall seconds of the timed steps; tokens/s = B x T / time
  MFU       (FLOPs per step / time) / this machine's own matmul peak at the same precision and
            thread count, measured in the same run (a 2048^3 product)
  peak      the process's peak resident set (ru_maxrss): weights, AdamW state and the step's
            activations together; what a machine needs to run the config at this batch

`--update-headers` writes the figures into each config's `# MEASURED` header lines. The last line
gives the step-time ratio of the LTM to the vanilla decoder at GPT-2-small size.

Run:  python bench/scale_configs.py                       (about 20 minutes on 2 idle cores)
      python bench/scale_configs.py --update-headers --batch 1
      python bench/scale_configs.py --configs configs/scale/gpt2_small_vanilla.yaml --batch 4
      python bench/scale_configs.py --quick                 (smoke run: tiny shapes)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _args import bench_parser

from ltm.core.hardware import cpu_model
from ltm.eval.flops import step_cost
from ltm.inference import DualRateOptimizer
from ltm.training.build import build_model, build_run_guide
from ltm.training.config import TrainConfig, load_config_file
from ltm.training.precision import autocast, compile_decoder, resolve_precision

REPO = Path(__file__).resolve().parent.parent
GPT2_VOCAB = 50257
QUICK = {"d_model": 32, "n_layer": 2, "n_head": 2, "window": None}


def load(path: Path, args) -> TrainConfig:
    """The config at `path` with this bench's batch, precision and threads (tiny with --quick)."""
    values = load_config_file(path)
    values.update(batch_size=args.batch, progress=False, threads=args.threads)
    if args.precision:
        values["precision"] = args.precision
    if args.quick:
        values.update(QUICK)
        values["data"] = {**values.get("data", {}), "block_size": 32}
        if "ltm" in values:
            values["ltm"] = {"n_latent": 2 * QUICK["n_layer"], "d_latent": 16}
    return TrainConfig.from_dict(values, str(path))


def vocab_size(cfg: TrainConfig, quick: bool) -> int:
    if quick:
        return 512
    path = REPO / cfg.data.tokenizer  # an absolute path stays as it is
    if path.is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    return GPT2_VOCAB


def flops_per_step(cfg: TrainConfig, vocab: int, tokens: torch.Tensor) -> int:
    """Counted FLOPs of one step at the config's K, from steps of K = 1 and 2 (0 without a loop)."""
    if cfg.inner.steps == 0 or cfg.family.exact_nll:
        return step_cost(cfg, vocab, tokens)["flops_per_step"]
    one, two = (step_cost(cfg.replace(inner=dataclasses.replace(cfg.inner, steps=k)), vocab,
                          tokens)["flops_per_step"] for k in (1, 2))
    return one + (cfg.inner.steps - 1) * (two - one)


def child(path: Path, args) -> dict:
    """Build the config's run, take a warm-up step, time `args.steps` steps; the figures as a dict."""
    cfg = load(path, args)
    if args.inner_steps is not None:
        cfg = cfg.replace(inner=dataclasses.replace(cfg.inner, steps=args.inner_steps))
    device = torch.device(args.device)
    if args.activation_checkpointing:
        cfg = cfg.replace(activation_checkpointing=True)
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    vocab = vocab_size(cfg, args.quick)
    torch.manual_seed(0)
    tokens = torch.randint(vocab, (cfg.batch_size, cfg.data.block_size + 1), device=device)  # (B, T+1)
    with autocast(precision, device):
        flops = flops_per_step(cfg, vocab, tokens) if not args.no_flops else 0
    model = build_model(cfg, vocab).to(device)
    guide = build_run_guide(cfg, model).to(device)
    model.decoder.checkpoint_blocks = cfg.activation_checkpointing
    if args.compile:
        compile_decoder(model)
    cuda = device.type == "cuda"
    opt = DualRateOptimizer(model, guide, cfg.inner_config(), cfg.slow_config(),
                            num_particles=cfg.num_particles, kl_control=cfg.kl, early=cfg.early)
    seconds = []
    for i in range(1 + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(precision, device):
            opt.step(tokens)
        if cuda:
            torch.cuda.synchronize()
        if i:
            seconds.append(time.perf_counter() - start)
    step = statistics.median(seconds)
    n_tokens = cfg.batch_size * cfg.data.block_size
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"params": sum(p.numel() for p in model.parameters()), "flops_per_token": flops / n_tokens,
            "flops_per_step": flops, "step_s": step, "tokens_per_s": n_tokens / step,
            "peak_gib": peak / 2**30, "device": device.type,
            "precision": precision, "threads": torch.get_num_threads(), "batch": cfg.batch_size,
            "block": cfg.data.block_size, "inner_steps": cfg.inner.steps, "model": cfg.model}


def matmul_peak(precision: str, threads: int, size: int = 2048, repeats: int = 5,
                device: str = "cpu") -> float:
    """FLOP/s of a size^3 matrix product in `precision` on `threads` threads (median)."""
    if threads:
        torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def header(r: dict, peak_flops: float) -> list[str]:
    """The config's `# MEASURED` lines."""
    mfu = r["flops_per_step"] / r["step_s"] / peak_flops if r["flops_per_step"] else float("nan")
    cpu = cpu_model()
    return [f"# MEASURED (python bench/scale_configs.py --update-headers; {cpu}, {os.cpu_count()} cores, "
            f"{r['threads']} threads, {r['precision']}, B {r['batch']}, T {r['block']}):",
            f"#   {r['params'] / 1e6:.1f}M parameters; {r['flops_per_token'] / 1e9:.2f} GFLOP per token "
            f"trained (K {r['inner_steps']})" if r["model"] == "ltm" else
            f"#   {r['params'] / 1e6:.1f}M parameters; {r['flops_per_token'] / 1e9:.2f} GFLOP per token "
            f"trained",
            f"#   one step {r['step_s']:.1f} s, {r['tokens_per_s']:.0f} tokens/s, MFU {mfu:.2f}, "
            f"peak memory {r['peak_gib']:.2f} GiB"]


def update_header(path: Path, lines: list[str]) -> None:
    """Replace the `# MEASURED` line of `path` and the `#   ` lines after it with `lines`."""
    old = path.read_text().splitlines()
    start = next(i for i, line in enumerate(old) if line.startswith("# MEASURED"))
    end = start + 1
    while end < len(old) and old[end].startswith("#   "):
        end += 1
    path.write_text("\n".join(old[:start] + lines + old[end:]) + "\n")


def stated_peak_gib(path: Path) -> float | None:
    """The peak memory a config's header states, in GiB (None before it was measured)."""
    found = re.search(r"peak memory ([\d.]+) GiB", path.read_text())
    return float(found.group(1)) if found else None


def parse_args(argv=None):
    ap = bench_parser(__doc__, batch=1, threads=0, device="cpu")
    ap.add_argument("--configs", nargs="*", type=Path,
                    default=sorted((REPO / "configs" / "scale").glob("*.yaml")))
    ap.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="(default: the config's)")
    ap.add_argument("--inner-steps", type=int, help="override K (for a quicker memory check)")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decoder blocks")
    ap.add_argument("--activation-checkpointing", action="store_true", help="recompute each block")
    ap.add_argument("--update-headers", action="store_true", help="write the figures into the configs")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    return args


def run_child(path: Path, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(path), "--batch", str(args.batch),
           "--threads", str(args.threads), "--steps", str(args.steps), "--device", args.device]
    cmd += ["--compile"] if args.compile else []
    cmd += ["--activation-checkpointing"] if args.activation_checkpointing else []
    cmd += (["--precision", args.precision] if args.precision else []) + (["--quick"] if args.quick else [])
    cmd += (["--inner-steps", str(args.inner_steps)] if args.inner_steps is not None else [])
    cmd += ["--no-flops"] if args.no_flops else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    results = {}
    for path in args.configs:
        results[path] = r = run_child(path, args)
        print(f"{path.name}: {r['params'] / 1e6:.1f}M params, {r['flops_per_token'] / 1e9:.3f} GFLOP/token, "
              f"step {r['step_s']:.2f} s, {r['tokens_per_s']:.0f} tok/s, peak {r['peak_gib']:.2f} GiB "
              f"({r['precision']}, B {r['batch']}, T {r['block']}, K {r['inner_steps']})", flush=True)
    any_result = next(iter(results.values()))
    size = 256 if args.quick else 8192 if args.device == "cuda" else 2048
    peak = matmul_peak(any_result["precision"], any_result["threads"], size, device=args.device)
    print(f"\nthis machine's matmul peak: {peak / 1e9:.1f} GFLOP/s ({any_result['precision']}, "
          f"{args.device}, {any_result['threads']} threads)")
    for path, r in results.items():
        lines = header(r, peak)
        print(f"\n{path.name}\n" + "\n".join(lines))
        if args.update_headers and not args.quick and args.device == "cpu":
            update_header(path, lines)
    names = {p.stem: r for p, r in results.items()}
    if "gpt2_small_ltm" in names and "gpt2_small_vanilla" in names:
        ratio = names["gpt2_small_ltm"]["step_s"] / names["gpt2_small_vanilla"]["step_s"]
        print(f"step time ratio gpt2_small_ltm/gpt2_small_vanilla {ratio:.3f}")
    else:
        first, last = list(results.values())[0], list(results.values())[-1]
        print(f"step time ratio {args.configs[-1].stem}/{args.configs[0].stem} "
              f"{last['step_s'] / first['step_s']:.3f}")


if __name__ == "__main__":
    main()
