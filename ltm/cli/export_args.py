"""The flags of `python -m ltm.export`."""

from __future__ import annotations

import argparse


def build_parser(description: str) -> argparse.ArgumentParser:
    """The export CLI's parser."""
    p = argparse.ArgumentParser(prog="python -m ltm.export", description=description)
    p.add_argument("--checkpoint", default="runs/ltm-default",
                   help="run directory (its latest step) or step directory (default: runs/ltm-default)")
    p.add_argument("--out", required=True, help="the Hugging Face folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose config names its model, prior or guide by a "
                   "module:Class path (importing it runs that code; only for checkpoints you trust)")
    return p
