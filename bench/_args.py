"""The flags every benchmark script shares: the model's shape, repeats, threads, device, --quick.

    ap = bench_parser(__doc__, d_model=128, layers=2, batch=8, repeats=30)  # these, with defaults
    ap.add_argument("--inner-steps", type=int, default=8)                    # and the script's own
"""

from __future__ import annotations

import argparse

HELP = {
    "vocab": "vocabulary V", "d_model": "model width D", "layers": "transformer blocks L",
    "heads": "attention heads", "batch": "sequences per step B", "seq_len": "tokens per sequence T",
    "repeats": "timed repeats", "warmup": "untimed warm-up repeats",
    "threads": "torch intra-op threads", "device": "torch device",
}


def bench_parser(doc: str, **defaults) -> argparse.ArgumentParser:
    """A parser described by `doc`'s first paragraph, with an option for each keyword of
    `defaults` (`d_model=128` gives `--d-model`, default 128) and always `--quick` (a smoke run)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, default in defaults.items():
        kind = type(default) if default is not None else int  # None: an optional count
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=default,
                        help=f"{HELP.get(name, name)} (default: {default})")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few repeats")
    return ap
