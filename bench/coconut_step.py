"""Cost of one Coconut training step (forward + backward) at the last curriculum stage: the
segmented pass (`Coconut._filled`: each thought pass runs only the positions not yet final against a
KV cache kept in the graph) against the plain schedule of n + 1 full passes, and a vanilla pass over
the same blocks as the floor.

The blocks mimic `reasoning:parity?bits=10,11,12` at its last stage: a question of 33-37 tokens,
`<bot>`, 10-12 thoughts, `<eot>`, an answer, padding to T. The three paths are timed round-robin
(order rotated each repeat, warm-up first); medians are shown. Before timing, the segmented and
full-pass logits are checked equal.

Run:  python bench/coconut_step.py            (about a minute on 2 idle CPU cores)
      python bench/coconut_step.py --quick    (smoke run)
"""

from __future__ import annotations

import statistics
import time

import torch
from _args import bench_parser

from ltm.models import DecoderConfig
from ltm.models.decoder import Decoder
from ltm.ponder.coconut import Coconut

THOUGHT, EOT, BOT = 5, 4, 3


def blocks(batch: int, length: int, thoughts: tuple[int, int], question: tuple[int, int],
           vocab: int) -> torch.Tensor:
    """Random ids (B, T) laid out as question, <bot>, thoughts, <eot>, answer, padding."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(6, vocab, (batch, length), generator=g)  # (B, T)
    for row in range(batch):
        q = int(torch.randint(question[0], question[1] + 1, (), generator=g))
        n = int(torch.randint(thoughts[0], thoughts[1] + 1, (), generator=g))
        tokens[row, q] = BOT
        tokens[row, q + 1:q + 1 + n] = THOUGHT
        tokens[row, q + 1 + n] = EOT
    return tokens


def main() -> None:
    ap = bench_parser(__doc__, vocab=262, d_model=128, layers=2, heads=4, batch=32, seq_len=90,
                      repeats=15, warmup=2, threads=2)
    args = ap.parse_args()
    if args.quick:
        args.batch, args.repeats, args.warmup = 4, 3, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=args.layers,
                        n_head=args.heads, block_size=args.seq_len, n_latent=0)
    family = Coconut(Decoder(cfg), thought_id=THOUGHT, eot_id=EOT)
    tokens = blocks(args.batch, args.seq_len, (10, 12), (33, 37), args.vocab)  # (B, T)
    with torch.no_grad():
        assert torch.allclose(family.exact_logits(tokens), family.logits_by_full_passes(tokens), atol=1e-4)
    paths = {"segmented": family.exact_logits, "full passes": family.logits_by_full_passes,
             "vanilla (floor)": family.decoder}
    times = {name: [] for name in paths}
    for r in range(args.warmup + args.repeats):
        names = list(paths)[r % 3:] + list(paths)[:r % 3]
        for name in names:
            family.zero_grad()
            start = time.perf_counter()
            paths[name](tokens).logsumexp(-1).mean().backward()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"Coconut step, B {args.batch}, T {args.seq_len}, 10-12 thoughts per row, d {args.d_model}, "
          f"{args.layers} layers, {args.threads} threads; median of {args.repeats}:")
    for name, t in med.items():
        print(f"  {name:16s} {1e3 * t:8.1f} ms")
    print(f"segmented / vanilla pass: {med['segmented'] / med['vanilla (floor)']:.2f}")
    print(f"full passes / segmented ratio: {med['full passes'] / med['segmented']:.2f}")


if __name__ == "__main__":
    main()
