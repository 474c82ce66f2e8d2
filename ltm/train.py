"""Train a model: `python -m ltm.train` (no arguments: a tiny LTM on the embedded corpus, ~5 min on CPU).

    python -m ltm.train --config configs/tiny.yaml --inner-steps 8
    python -m ltm.train --model ponderlm2 --ponderlm2.thoughts 2   # a family and its options
    python -m ltm.train --out-dir runs/x --resume auto --max-steps 600   # continue exactly
    python -m ltm.train --help                                           # every flag

Flags are the fields of `ltm.training.config.TrainConfig` and the options of each family's
section; a `--config` file gives values for any of them and flags given on the command line win.
On `--resume` the checkpoint's config is the base. A user error (bad key, unknown prior, missing
data, damaged checkpoint) prints one `error:` line and exits with status 2; set LTM_DEBUG=1 for
the traceback.
"""

from __future__ import annotations

import sys

from ltm.cli.errors import report_user_errors
from ltm.cli.train_args import build_parser, given_values
from ltm.training.config import TrainConfig
from ltm.training.trainer import Trainer, resolve_with_checkpoint


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build the run and train it; user errors print one `error:` line and return 2."""
    parser = build_parser(__doc__.splitlines()[0], argv)
    args = parser.parse_args(argv)
    try:
        return report_user_errors(lambda: _train(args))
    except KeyboardInterrupt:
        print("\ninterrupted; continue from the last checkpoint with --resume auto", file=sys.stderr)
        return 130


def _train(args) -> None:
    given = given_values(args)
    cfg = resolve_with_checkpoint(TrainConfig.from_dict(given), given)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return
    Trainer(cfg).train()


if __name__ == "__main__":
    sys.exit(main())
