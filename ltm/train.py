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

import os
import sys

from ltm.checkpoint import CheckpointError
from ltm.train_config import ConfigError, TrainConfig, build_parser, config_yaml, given_values
from ltm.trainer import Trainer, resolve_with_checkpoint

USER_ERRORS = (ConfigError, CheckpointError, ValueError, FileNotFoundError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build the run and train it; user errors print one `error:` line and return 2."""
    parser = build_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    try:
        given = given_values(args)
        cfg = resolve_with_checkpoint(TrainConfig(**given), given)
        if args.print_config:
            print(config_yaml(cfg), end="")
            return 0
        Trainer(cfg).train()
    except USER_ERRORS as err:
        if os.environ.get("LTM_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue from the last checkpoint with --resume auto", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
