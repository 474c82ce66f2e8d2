"""Training and decoding cost per token of the token-level families, relative to the vanilla decoder.

Every family wraps a decoder of the same size (fresh weights, same seed). Two costs, timed
round-robin in one run (family order rotated each repeat, one warm-up round first), medians over
the repeats, in CPU seconds of this process (`--wall`: wall-clock seconds, which on a shared
machine also count the waits for a core):

  train   one ELBO evaluation with the empty guide (`LatentELBO().differentiable_loss`, i.e. the
          summed cross-entropy; adaptive CoT runs in training mode, so its router loss is in)
          plus its backward, on a (B, T+1) batch; per training token.
  decode  `decode_step` calls after a prefilled prompt, batch 1 (latency), KV cache on; per new
          token.

Next to each measured ratio the decode cost the family states (`Family.cost_per_token`, decode
FLOPs over a vanilla decoder): (K+1)x for PonderLM-2, (S+1)x for PonderLM, 1 + computed latent
steps per token for adaptive latent CoT (counted over the new tokens of the timed decode), (P+1)x
for pause tokens, Lx for a looped decoder. For training, PonderLM-2 runs an initial pass over T
slots, J sweeps and a final pass over (K+1)T slots: 1 + (J+1)(K+1) vanilla passes; adaptive CoT
runs 1 + computed latent steps per token (those of the timed batch), skipped slots not run at all;
that count is shown as "expected" (attention's quadratic term ignored: an adaptive step attends to
the levels below it, so the measured ratio sits a little above); the other families are expected
to train at their decode cost. Adaptive CoT runs twice: at the default pruning threshold (0: every
step runs) and at `--prune` (partly active levels, packed); a line gives its measured/stated train
ratios. The last line is the measured/stated decode ratio of PonderLM-2: close to 1 means the KV
cache does its job (a token costs K+1 single-slot steps, not a recomputation of the prefix).

Run:  python bench/ponder_cost.py            (a few minutes on 2 shared CPU cores)
      python bench/ponder_cost.py --quick    (smoke run)
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
from _args import bench_parser

from ltm.inference import EmptyGuide, LatentELBO
from ltm.inference.guides.base import pyro_guide
from ltm.models import Decoder, DecoderConfig
from ltm.ponder.adaptive_cot import AdaptiveCoTOptions, AdaptiveLatentCoT, CoTState
from ltm.ponder.looped import LoopedDecoder
from ltm.ponder.pause import PauseTokens
from ltm.ponder.ponderlm import PonderLM
from ltm.ponder.ponderlm2 import PonderLM2
from ltm.ponder.vanilla import VanillaDecoder


def families(cfg: DecoderConfig, sweeps: int, prune: float
             ) -> dict[str, tuple[torch.nn.Module, float | None]]:
    """name -> (family, expected train multiplier or None where it follows its stated cost)."""

    def dec() -> Decoder:
        torch.manual_seed(0)
        return Decoder(cfg)

    out = {"vanilla": (VanillaDecoder(dec()), None)}
    for k in (1, 2):  # an initial pass over T slots, J sweeps and a final pass over (K+1)T slots
        out[f"ponderlm2 K={k}"] = (PonderLM2(dec(), thoughts=k, jacobi_sweeps=sweeps),
                                   1.0 + (sweeps + 1) * (k + 1))
    out["pause P=1"] = (PauseTokens(dec(), pauses=1), None)
    out["looped L=2"] = (LoopedDecoder(dec(), loops=2), None)
    out["ponderlm S=2"] = (PonderLM(dec(), passes=2), None)
    default = AdaptiveCoTOptions().prune_threshold
    out[f"adaptive p={default:g}"] = (AdaptiveLatentCoT(dec(), max_steps=3), None)
    out[f"adaptive p={prune:g}"] = (AdaptiveLatentCoT(dec(), max_steps=3, prune_threshold=prune), None)
    return out


CLOCK = time.process_time  # or time.perf_counter (--wall)


def train_time(family, tokens: torch.Tensor) -> float:
    """Seconds per training token of one loss + backward."""
    elbo, guide = LatentELBO(), EmptyGuide()
    start = CLOCK()
    elbo.differentiable_loss(family.model, pyro_guide(guide, family.prior), tokens).backward()
    elapsed = CLOCK() - start
    family.zero_grad(set_to_none=True)
    return elapsed / tokens[:, 1:].numel()


@torch.no_grad()
def decode_time(family, prompt: torch.Tensor, n_new: int) -> float:
    """Seconds per new token of `n_new` cached decode steps after a prefilled `prompt` (1, P)."""
    logits, state = family.prefill(prompt, prompt.shape[1] + n_new)
    start = CLOCK()
    for _ in range(n_new):
        logits, state = family.decode_step(logits.argmax(-1), state)
    return (CLOCK() - start) / n_new


@torch.no_grad()
def stated_decode_cost(family, prompt: torch.Tensor, n_new: int) -> float:
    """The family's stated decode cost per new token of the (deterministic) timed decode: for
    adaptive CoT 1 + the latent steps its new tokens computed, else `cost_per_token`."""
    logits, state = family.prefill(prompt, prompt.shape[1] + n_new)
    before = state.steps if isinstance(state, CoTState) else 0.0
    for _ in range(n_new):
        logits, state = family.decode_step(logits.argmax(-1), state)
    if isinstance(state, CoTState):
        return 1.0 + (state.steps - before) / n_new
    return family.cost_per_token


def measure(fams: dict, step: Callable[[object], float], repeats: int) -> dict[str, float]:
    """Median of `step(family)` per family, round-robin with a rotated order, one warm-up round."""
    names = list(fams)
    for name in names:
        step(fams[name][0])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(step(fams[name][0]))
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = bench_parser(__doc__, repeats=None, threads=1)
    parser.add_argument("--sweeps", type=int, default=1, help="PonderLM-2 Jacobi sweeps J (training)")
    parser.add_argument("--prune", type=float, default=0.25,
                        help="adaptive CoT's second pruning threshold (partly active levels)")
    parser.add_argument("--wall", action="store_true", help="time wall-clock, not process CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    if args.quick:
        cfg = DecoderConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, d_model=32)
        B, T, P, n_new, repeats = 2, 16, 4, 8, 2
    else:
        cfg = DecoderConfig(vocab_size=512, block_size=128, n_layer=4, n_head=4, d_model=128)
        B, T, P, n_new, repeats = 8, 64, 8, 48, 15
    repeats = args.repeats or repeats
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)  # (B, T+1)
    prompt = torch.randint(0, cfg.vocab_size, (1, P), generator=g)  # (1, P)
    fams = {}
    for name, (fam, train_x) in families(cfg, args.sweeps, args.prune).items():
        fam.train(isinstance(fam, AdaptiveLatentCoT))  # eval: deterministic J; adaptive: router loss in
        fams[name] = (fam, train_x, stated_decode_cost(fam, prompt, n_new))

    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"decoder d={cfg.d_model} layers={cfg.n_layer} vocab={cfg.vocab_size}; train batch {B}x{T}, "
          f"decode batch 1, prompt {P} + {n_new} new; J={args.sweeps}; {repeats} repeats, "
          f"{torch.get_num_threads()} thread(s), {'wall-clock' if args.wall else 'CPU'} time")
    if load > 0.5 * cores:
        print(f"warning: load average {load:.1f} on {cores} cores; other processes skew the timings")
    train = measure(fams, lambda f: train_time(f, tokens), repeats)
    for name, (fam, train_x, decode_x) in fams.items():  # after its timed steps: the steps they ran
        fams[name] = (fam, fam.cost_per_token if train_x is None else train_x, decode_x)
    decode = measure(fams, lambda f: decode_time(f, prompt, n_new), repeats)
    head = (f"{'family':<18}{'train us/tok':>13}{'x vanilla':>10}{'expected':>9}"
            f"{'decode ms/tok':>15}{'x vanilla':>10}{'stated':>8}{'meas/stated':>12}")
    print(head)
    print("-" * len(head))
    last = [n for n in fams if n.startswith("ponderlm2")]
    order = [n for n in fams if n not in last] + last
    for name in order:
        _, train_x, decode_x = fams[name]
        tr, de = train[name] / train["vanilla"], decode[name] / decode["vanilla"]
        print(f"{name:<18}{train[name] * 1e6:>13.1f}{tr:>10.2f}{train_x:>9.2f}"
              f"{decode[name] * 1e3:>15.3f}{de:>10.2f}{decode_x:>8.2f}{de / decode_x:>12.2f}")
    adaptive = [f"{n.split()[1]}: {train[n] / train['vanilla']:.2f}/{fams[n][1]:.2f} = "
                f"{train[n] / train['vanilla'] / fams[n][1]:.2f}" for n in fams if n.startswith("adaptive")]
    print(f"adaptive CoT train, measured/stated (1 + computed steps): {'; '.join(adaptive)}")
    k1 = decode["ponderlm2 K=1"] / decode["vanilla"] / 2.0
    k2 = decode["ponderlm2 K=2"] / decode["vanilla"] / 3.0
    print(f"PonderLM-2 decode, measured/stated ((K+1)x): K=2 {k2:.2f}; K=1 {k1:.2f}")


if __name__ == "__main__":
    main()
