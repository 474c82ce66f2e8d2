"""Train a model: `python -m ltm.train` (no arguments: a tiny LTM on the embedded corpus, ~5 min on CPU).

    python -m ltm.train --config configs/tiny.yaml --inner-steps 8
    python -m ltm.train --out-dir runs/x --resume auto --max-steps 600   # continue exactly
    python -m ltm.train --help                                           # every field of TrainConfig

Flags are the fields of `ltm.train_config.TrainConfig`; a `--config` file gives values for any of
them and flags given on the command line win. On `--resume` the checkpoint's config is the base.
A user error (bad key, unknown prior, missing data, damaged checkpoint) prints one `error:` line and
exits with status 2; set LTM_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import sys

from ltm.cli_errors import report_user_errors
from ltm.train_config import TrainConfig, build_parser, config_yaml, given_values
from ltm.trainer import Trainer, resolve_with_checkpoint


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build the run and train it; user errors print one `error:` line and return 2."""
    parser = build_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    try:
        return report_user_errors(lambda: _train(args))
    except KeyboardInterrupt:
        print("\ninterrupted; continue from the last checkpoint with --resume auto", file=sys.stderr)
        return 130


def _train(args) -> None:
    given = given_values(args)
    cfg = resolve_with_checkpoint(TrainConfig(**given), given)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return
    Trainer(cfg).train()


if __name__ == "__main__":
    sys.exit(main())
