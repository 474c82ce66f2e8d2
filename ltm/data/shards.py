"""Token shards on disk: the index, its checks, and one memory-mapped array over a split's shards.

A prepared folder (`python -m ltm.prepare`) holds `tokenizer.json`, raw little-endian token files
`train-00000.bin`, `val-00000.bin`, ... (uint16, or uint32 for a vocabulary over 65536 ids) and
`index.json`: the settings, the source's counts, the tokenizer's special ids, the dtype and, per
shard, each file's token count. A split's stream is its shards concatenated in order; it is
exactly the stream `ltm.data.packing.pack` makes of that split in memory, so `TokenBlocks` over
`ShardedTokens` gives the same blocks, and `BatchIterator` the same batches, as the in-memory path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ltm.core.errors import DataError, MissingFileError

INDEX_FILE = "index.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "ltm-token-shards"
FORMAT_VERSION = 1
DTYPES = ("uint16", "uint32")
SPLITS = ("train", "val")


def shard_name(split: str, k: int) -> str:
    """File name of shard `k` of `split`: train-00000.bin."""
    return f"{split}-{k:05d}.bin"


def is_prepared(path: str | Path) -> bool:
    """True when `path` is a folder holding a shard index (a prepared corpus)."""
    return (Path(path).expanduser() / INDEX_FILE).is_file()


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write `obj` as JSON to a temporary file beside `path`, flush it to disk, rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_index(folder: Path) -> dict:
    """The shard index of `folder`, checked to be one this version of ltm reads.

    Raises:
        DataError: Not JSON, not a shard index, or of another format version.
    """
    path = folder / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"shard index {str(path)!r} cannot be read ({err}); prepare the corpus again with "
                        f"python -m ltm.prepare.") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is not an ltm token-shard index (no \"format\": {FORMAT!r}); "
                        f"point --dataset at a folder written by python -m ltm.prepare.")
    if index.get("version") != FORMAT_VERSION:
        raise DataError(f"shard index {str(path)!r} has format version {index.get('version')}, this ltm "
                        f"reads {FORMAT_VERSION}; prepare the corpus again with this version.")
    return index


def check_shards(folder: Path, index: dict, splits: tuple[str, ...] = SPLITS) -> None:
    """Check that every shard the index lists exists and holds its token count in its dtype.

    Raises:
        MissingFileError: A listed shard is missing.
        DataError: An unknown dtype, a vocabulary the dtype cannot hold, or a shard whose size is
            not its token count times the dtype's width (a damaged file or a wrong index).
    """
    where = str(folder / INDEX_FILE)
    dtype = index.get("dtype")
    if dtype not in DTYPES:
        raise DataError(f"shard index {where!r} gives dtype {dtype!r}, but shards are one of {DTYPES}; "
                        f"prepare the corpus again with python -m ltm.prepare.")
    width = np.dtype(dtype).itemsize
    if index["vocab_size"] > np.iinfo(dtype).max + 1:
        raise DataError(f"shard index {where!r} gives dtype {dtype} for a vocabulary of "
                        f"{index['vocab_size']} ids, which it cannot hold; prepare the corpus again with "
                        f"python -m ltm.prepare.")
    for shard in index["shards"]:
        for split in splits:
            name, tokens = shard[split]["file"], shard[split]["tokens"]
            path = folder / name
            if not path.is_file():
                raise MissingFileError(f"shard {str(path)!r} listed in {where!r} is missing; prepare the "
                                       f"corpus again with python -m ltm.prepare (--overwrite).")
            size = path.stat().st_size
            if size != tokens * width:
                raise DataError(f"shard {str(path)!r} holds {size} bytes but {where!r} lists {tokens} "
                                f"{dtype} tokens ({tokens * width} bytes): a damaged shard or a wrong index; "
                                f"prepare the corpus again with python -m ltm.prepare (--overwrite).")


class ShardedTokens:
    """One read-only 1-D token array over a split's shards, in order (each a `np.memmap`).

    Supports what `TokenBlocks` needs: `shape`, `dtype`, `len`, a step-1 slice and integer-array
    indexing of any shape, each returning a numpy array; a block that crosses two shards is joined.

    Args:
        arrays: The shards' token arrays, shapes (N_k,), one dtype.
    """

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.dtype = arrays[0].dtype if arrays else np.dtype(np.uint16)
        self.starts = np.cumsum([0] + [len(a) for a in arrays])  # (S+1,) offset of each shard
        self.shape = (int(self.starts[-1]),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("ShardedTokens slices take step 1")
            return self._range(start, max(start, stop))  # (stop - start,)
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu":
            raise IndexError(f"ShardedTokens takes int or slice indices, not {idx.dtype}")
        if idx.ndim == 0:
            return self._range(int(idx) % len(self), int(idx) % len(self) + 1)[0]
        flat = idx.ravel() % max(len(self), 1)  # (M,)
        shard = np.searchsorted(self.starts, flat, side="right") - 1  # (M,)
        out = np.empty(flat.shape, dtype=self.dtype)  # (M,)
        for k in np.unique(shard).tolist():
            hit = shard == k
            out[hit] = self.arrays[k][flat[hit] - self.starts[k]]
        return out.reshape(idx.shape)

    def _range(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts = []
        k = max(first, 0)
        while start < stop and k < len(self.arrays):
            lo, hi = start - self.starts[k], min(stop, self.starts[k + 1]) - self.starts[k]
            parts.append(np.asarray(self.arrays[k][lo:hi]))
            start, k = int(self.starts[k] + hi), k + 1
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._range(0, len(self))  # (N,): reads every shard
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"ShardedTokens({len(self)} {self.dtype} tokens in {len(self.arrays)} shards)"


def open_split(folder: Path, index: dict, split: str) -> ShardedTokens:
    """The memory-mapped tokens of `split` ("train" or "val") of a checked prepared folder."""
    dtype = np.dtype(index["dtype"]).newbyteorder("<")
    arrays = [np.memmap(folder / s[split]["file"], dtype=dtype, mode="r") if s[split]["tokens"]
              else np.zeros(0, dtype=dtype) for s in index["shards"]]  # an empty file cannot be mapped
    return ShardedTokens(arrays)


def open_prepared(folder: str | Path) -> tuple[dict, ShardedTokens, ShardedTokens]:
    """The index and the train and val tokens of a prepared folder, every shard checked first.

    Raises:
        MissingFileError: A listed shard or the tokenizer is missing.
        DataError: A damaged or foreign index, an interrupted preparation, a shard that does not
            match the index.
    """
    folder = Path(folder).expanduser()
    index = read_index(folder)
    if not index.get("complete"):
        raise DataError(f"prepared folder {str(folder)!r} is incomplete ({len(index.get('shards', []))} "
                        f"shards written by an interrupted run); finish it by running python -m ltm.prepare "
                        f"again with the same arguments.")
    if not (folder / TOKENIZER_FILE).is_file():
        raise MissingFileError(f"prepared folder {str(folder)!r} has no {TOKENIZER_FILE}; prepare the "
                               f"corpus again with python -m ltm.prepare (--overwrite).")
    check_shards(folder, index)
    return index, open_split(folder, index, "train"), open_split(folder, index, "val")
