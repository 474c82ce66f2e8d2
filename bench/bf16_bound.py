"""Does training in bf16 change the default run's bound? bf16 against fp32 over several seeds.

The default run (`configs/default.yaml`: the LTM on the embedded corpus, BPE 512, d 128, 2 layers,
B 16, 4 latents x 32, K 4) is trained `--steps` steps (its learning-rate schedule shortened to
them) in fp32 and under `--precision bf16`, for each of `--seeds` seeds, the two precisions of one
seed one after the other in this process, each in a fresh temporary run directory. Each trained
model is then scored in fp32 on the run's fixed validation batches: the fresh-noise ELBO bound at
the evaluation budget K (nats/token; the noise seeded alike for both precisions).

Reported: the bound per seed and precision, the mean bf16 - fp32 difference with its standard
error over seeds, and the fp32 seed spread (the standard deviation of the fp32 bounds over seeds:
the run-to-run noise). bf16 stays "within run-to-run noise" when |mean difference| is below the
fp32 seed spread.

Where bf16 is not native, its products run on the fp32 kernel (`LTM_ALLOW_EMULATED_BF16=1`):
the same numbers up to summation order, at about fp32's speed.

Run:  python bench/bf16_bound.py                      (6 seeds x 100 steps: about 10 minutes on
                                                       a shared 2-core CPU)
      python bench/bf16_bound.py --seeds 4 --steps 300
      python bench/bf16_bound.py --quick              (smoke run: 2 seeds x 2 steps)
Last line: the mean bf16 - fp32 difference against the fp32 seed spread, and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from ltm.training.config import TrainConfig, load_config_file
from ltm.training.precision import EMULATED_BF16_ENV, has_fast_bf16
from ltm.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def train_and_score(base: TrainConfig, seed: int, precision: str, steps: int, out: Path) -> dict:
    """Train `base` for `steps` at `seed` in `precision`; its fp32 validation bound and timings."""
    cfg = base.replace(seed=seed, precision=precision, max_steps=steps, eval_every=steps,
                       save_every=10**9, out_dir=str(out), progress=False, threads=1)
    trainer = Trainer(cfg, log=lambda message: None)
    start = time.perf_counter()
    own = trainer.train()  # validated in the run's precision at the last step
    seconds = time.perf_counter() - start
    trainer.precision = "fp32"
    bound = trainer.validate()  # the same batches and noise seed, scored in fp32
    return {"bound": bound.neg_elbo, "own": own.neg_elbo, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    ap.add_argument("--steps", type=int, default=100, help="training steps per run")
    ap.add_argument("--seeds", type=int, default=6, help="seeds 0 .. N-1")
    ap.add_argument("--eval-batches", type=int, default=None,
                    help="validation batches (default: the config's)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 seeds x 2 steps without warm-up, 1 validation batch")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.eval_batches = 2, 2, 1
    import torch

    native = has_fast_bf16(torch.device("cpu"))
    if not native:
        os.environ[EMULATED_BF16_ENV] = "1"
    base = TrainConfig.from_dict(load_config_file(args.config), args.config)
    if args.eval_batches:
        base = base.replace(eval_batches=args.eval_batches)
    if args.quick:  # no warm-up, so that two steps move the weights and the precisions differ
        base = base.replace(slow=dataclasses.replace(base.slow, warmup_steps=0))
    print(f"{Path(args.config).name}: {base.model}, d_model {base.d_model}, {base.n_layer} layers, "
          f"B {base.batch_size}, K {base.inner.steps} (eval K {base.eval_steps}), {args.steps} steps, "
          f"seeds 0-{args.seeds - 1}, {base.eval_batches} validation batches; bf16 native: "
          f"{native}; bound = fresh-noise ELBO, scored in fp32")
    results = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory(prefix="bf16_bound_") as tmp:
        for seed in range(args.seeds):
            order = PRECISIONS if seed % 2 == 0 else PRECISIONS[::-1]
            for p in order:
                results[p].append(train_and_score(base, seed, p, args.steps, Path(tmp) / f"{p}-{seed}"))
            f, b = results["fp32"][-1], results["bf16"][-1]
            print(f"seed {seed}: fp32 {f['bound']:.4f}  bf16 {b['bound']:.4f}  bf16 - fp32 "
                  f"{b['bound'] - f['bound']:+.4f}  (bf16 run scored in bf16: {b['own']:.4f}; "
                  f"train s fp32 {f['seconds']:.0f}, bf16 {b['seconds']:.0f})", flush=True)

    fp32 = [r["bound"] for r in results["fp32"]]
    diffs = [b["bound"] - f["bound"] for f, b in zip(results["fp32"], results["bf16"], strict=True)]
    mean = statistics.mean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    spread = statistics.stdev(fp32) if len(fp32) > 1 else float("nan")
    print(f"\nmean bound: fp32 {statistics.mean(fp32):.4f}, bf16 "
          f"{statistics.mean(r['bound'] for r in results['bf16']):.4f} nats/token")
    print(f"fp32 seed spread (std over {len(fp32)} seeds): {spread:.4f}; max - min "
          f"{max(fp32) - min(fp32):.4f}")
    verdict = "within" if abs(mean) < spread else "OUTSIDE"
    print(f"bf16 - fp32 bound: {mean:+.5f} +- {se:.5f} (SE) vs fp32 seed spread {spread:.5f}: "
          f"{verdict} run-to-run noise, ratio |diff|/spread {abs(mean) / spread:.4f}")


if __name__ == "__main__":
    main()
