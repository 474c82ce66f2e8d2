"""Train several model families on one dataset, tokenizer and token budget, and score them alike.

    python -m ltm.compare --config configs/compare/embedded.yaml
    python -m ltm.compare --config configs/compare/controls_enwiki.yaml --quick   # a first look
    python -m ltm.compare --trend runs/compare/controls_scale_d64 runs/compare/controls_enwiki \
        --run ltm-warmup --out-dir results/compare/scale_trend      # gap to each control vs size

The config names the runs (a family and its options each), the settings they share, and how the
held-out split is scored (`ltm.eval.comparison`). Runs train one after another into OUT_DIR/RUN
(`--jobs N`: N at a time, each in its own process);
each finished run is scored (exact NLL for deterministic families; fresh-noise ELBO bound against K,
importance-weighted bound and prefix-predictive NLL for stochastic ones) and OUT_DIR/results.md
and its plots are rewritten. Run the same command again after an interruption: finished runs are
skipped and an unfinished one resumes exactly. A mistake in the config prints one `error:` line and
exits with status 2 before anything is trained; LTM_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ltm.cli.compare_args import build_parser, command_line
from ltm.cli.errors import report_user_errors
from ltm.core.errors import ConfigError, Preempted
from ltm.eval.comparison import load_comparison
from ltm.eval.comparison_run import run_comparison
from ltm.eval.trend import write_trend


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def body() -> None:
        if args.trend:
            if not (args.run and args.out_dir):
                raise ConfigError("--trend needs --run NAME (the run to follow) and --out-dir DIR.")
            print(f"wrote {write_trend([Path(d) for d in args.trend], args.run, Path(args.out_dir))}")
            return
        if not args.config:
            raise ConfigError("give --config FILE (a comparison YAML), or --trend DIR ... for a scale trend.")
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1 (runs trained at once), got {args.jobs}.")
        comp = load_comparison(args.config, args.out_dir, quick=args.quick)
        try:
            path = run_comparison(comp, command_line(argv), log=lambda m: print(m, flush=True),
                                  jobs=args.jobs)
        except Preempted as stop:  # a run saved where it stopped: the same command continues it
            message = str(stop).replace("continue with --resume auto", "run the same command again to "
                                        "continue")
            raise Preempted(stop.signum, stop.step, message) from None
        print(f"results in {path}")

    try:
        return report_user_errors(body)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
