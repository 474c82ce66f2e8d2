"""The flags of `python -m ltm.prepare`: one per field of `ShardConfig`, plus where and how to run.

`--dataset`, `--tokenizer`, `--vocab-size`, `--val-fraction`, `--seed`, `--max-documents`,
`--text-field` and `--encoding` mean what they mean to `python -m ltm.train` (`--seed` is its
`--data-seed`), so the same values give the same token stream as training's in-memory path.
"""

from __future__ import annotations

import argparse
import dataclasses

from ltm.cli.docstrings import attribute_docs
from ltm.data.shard_prep import ShardConfig


def _parse_type(annotation: str):
    """The argparse type of a field annotation ("int", "int | None", "str", "float")."""
    base = annotation.replace(" | None", "")
    kind = {"int": int, "float": float, "str": str}[base]
    if " | None" not in annotation:
        return kind

    def optional(text: str):
        return None if text.lower() == "none" else kind(text)

    optional.__name__ = base
    return optional


def build_parser(description: str) -> argparse.ArgumentParser:
    """`--dataset` and `--out-dir` (required), the other `ShardConfig` fields, `--num-proc`, `--overwrite`."""
    parser = argparse.ArgumentParser(prog="python -m ltm.prepare", description=description)
    docs = attribute_docs(ShardConfig)
    for f in dataclasses.fields(ShardConfig):
        flag = "--" + f.name.replace("_", "-")
        annotation = str(f.type)  # "int | None": annotations are strings here
        help_text = docs.get(f.name, f.name)
        if f.name == "dataset":
            parser.add_argument(flag, required=True, help=help_text)
            continue
        metavar = annotation.split(" ")[0].upper() + ("|none" if " | None" in annotation else "")
        parser.add_argument(flag, type=_parse_type(annotation), default=f.default, metavar=metavar,
                            help=f"{help_text} (default: {'none' if f.default is None else f.default})")
    parser.add_argument("--out-dir", required=True, help="folder to write the shards, tokenizer.json and "
                        "index.json into; run again with the same flags to resume an interrupted run")
    parser.add_argument("--num-proc", type=int, default=1, metavar="INT",
                        help="processes that encode (each single-threaded; this one reads and writes) "
                             "(default: 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier preparation in --out-dir with other settings and start again")
    return parser


def config_from_args(args: argparse.Namespace) -> ShardConfig:
    """The `ShardConfig` the flags give."""
    return ShardConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ShardConfig)})
