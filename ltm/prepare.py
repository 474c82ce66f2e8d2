"""Tokenize a corpus of any size into memory-mapped token shards: `python -m ltm.prepare`.

    python -m ltm.prepare --dataset corpus/ --tokenizer gpt2/tokenizer.json --out-dir data/corpus \
        --num-proc 8
    python -m ltm.train --dataset data/corpus --block-size 1024      # trains on the shards

The source is read as a stream (local files of any kind `python -m ltm.train` reads, or a hub
dataset with --split), never held in memory; --num-proc processes encode it. The train/validation
split and the packing are those of training's in-memory path: the same blocks, in the same order.
Stopped (Ctrl-C, SIGTERM, a crash, a kill), it resumes when run again with the same flags, after
its last finished shard, and ends with the same bytes. A user error prints one `error:` line and
exits with status 2 before anything is written; LTM_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import sys

# Only the standard library at the top: the worker processes, spawned, import this module again.


def main(argv: list[str] | None = None) -> int:
    """Parse flags and prepare the shards; user errors print one `error:` line and return 2."""
    import os
    import signal

    # A `datasets` stream imports torch (about 200 MB resident) only to share its epoch counter with
    # DataLoader workers; this tool has none. Set before `datasets` is imported.
    os.environ.setdefault("USE_TORCH", "0")

    from ltm.cli.errors import report_user_errors
    from ltm.cli.prepare_args import build_parser, config_from_args
    from ltm.data.shard_prep import prepare_shards

    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)

    def stop(signum, frame):
        raise KeyboardInterrupt  # unwinds: the pool's workers are stopped, finished shards kept

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return report_user_errors(lambda: prepare_shards(config_from_args(args), args.out_dir,
                                                         num_proc=args.num_proc, overwrite=args.overwrite),
                                  pyro_checks_off=False)
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to resume after the last finished shard in "
              f"{args.out_dir}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
