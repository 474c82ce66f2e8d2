"""The flags of `python -m ltm.compare`."""

from __future__ import annotations

import argparse


def build_parser(description: str) -> argparse.ArgumentParser:
    """The comparison CLI's parser: a config file, and where to run."""
    p = argparse.ArgumentParser(prog="python -m ltm.compare", description=description)
    p.add_argument("--config", default=None, help="comparison YAML: name, out_dir, common:, eval:, runs:, "
                   "seeds:, controls: (see configs/compare/embedded.yaml, controls_enwiki.yaml)")
    p.add_argument("--trend", nargs="+", default=None, metavar="DIR",
                   help="instead of running one: the scale trend of --run across these finished "
                   "comparisons' folders (its gap to each control against its size), into --out-dir")
    p.add_argument("--run", default=None, help="with --trend: the run to follow")
    p.add_argument("--out-dir", default=None, help="write the comparison here instead of its out_dir "
                   "(default: the file's out_dir, else runs/compare/NAME)")
    p.add_argument("--quick", action="store_true", help="the same runs and controls at a tiny size, 12 "
                   "steps, 2 seeds, in OUT_DIR-quick: a first look in minutes (its numbers say that "
                   "everything runs, not which run wins)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run, 0: one per core "
                   "(default: 1)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained and scored at once, each in its own "
                   "process (default: 1; on 2 cores with --threads 1, --jobs 2 halves the wall time); a "
                   "run's numbers do not depend on it")
    return p


def command_line(argv: list[str]) -> str:
    """The command as a user would type it again."""
    return " ".join(["python -m ltm.compare", *argv])
