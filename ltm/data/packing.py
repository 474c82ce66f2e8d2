"""The train/validation split of documents and their packing into one token stream (no torch).

Packing: BOS doc EOS BOS doc EOS ..., or, when BOS and EOS are the same token (GPT-2's
`<|endoftext|>`), one shared separator: E doc E doc E. `pack` packs a list in memory; `pack_chunk`
packs one chunk of a streamed corpus into its train and validation parts, so that the chunks'
parts, concatenated in order after one leading separator, are exactly `pack` of each split.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from ltm.core.errors import ConfigError

_CHUNK_CHARS = 200_000  # text per encode_batch call in `pack` (progress granularity)
_PROGRESS_CHARS = 1_000_000  # show a progress bar above this much text


def check_split(val_fraction: float, max_documents: int | None) -> None:
    """Refuse a held-out fraction outside [0, 1) or a document limit below 1."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if max_documents is not None and max_documents < 1:
        raise ConfigError(f"max_documents must be at least 1 or None, got {max_documents}.")


def split_documents(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of document indices 0..n-1 into (train, val), each in ascending order."""
    n_val = 0 if val_fraction == 0 else min(n - 1, max(1, round(val_fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def val_mask(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """`split_documents` as one flag per document: True for the validation split. Shape (n,)."""
    mask = np.zeros(n, dtype=bool)
    mask[split_documents(n, val_fraction, seed)[1]] = True
    return mask


def stream_dtype(vocab_size: int) -> type:
    """The narrowest unsigned dtype that holds every token id: uint16 up to 65536 ids, else uint32."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def pack(tok: Tokenizer, docs: list[str], bos: int, eos: int, desc: str) -> np.ndarray:
    """Token stream BOS doc EOS BOS doc EOS ...; one shared separator when bos == eos. Shape (N,)."""
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.int32
    parts = [np.array([bos], dtype=dtype)] if bos == eos else []
    wrap_bos = [bos] if bos != eos else []
    sizes = [len(d) for d in docs]
    ends = np.searchsorted(np.cumsum(sizes), np.arange(_CHUNK_CHARS, sum(sizes), _CHUNK_CHARS), side="right")
    bounds = [0, *sorted(set(ends.tolist()) - {0, len(docs)}), len(docs)]  # chunks of ~_CHUNK_CHARS
    with tqdm(total=sum(sizes), desc=desc, unit="char", unit_scale=True,
              disable=sum(sizes) < _PROGRESS_CHARS) as bar:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            for enc in tok.encode_batch(docs[lo:hi], add_special_tokens=False):
                parts.append(np.array(wrap_bos + enc.ids + [eos], dtype=dtype))
            bar.update(sum(sizes[lo:hi]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def leading_tokens(bos: int, eos: int, dtype) -> np.ndarray:
    """What a packed stream starts with before its first document: the shared separator, if any."""
    return np.array([bos] if bos == eos else [], dtype=dtype)  # (0,) or (1,)


def pack_chunk(tok: Tokenizer, texts: list[str], is_val: np.ndarray, bos: int, eos: int,
               dtype) -> tuple[np.ndarray, np.ndarray]:
    """The packed tokens of one chunk's training and validation documents (no leading separator).

    Args:
        tok: The tokenizer.
        texts: Consecutive documents of the corpus.
        is_val: One flag per document, True for the validation split. Shape (len(texts),).
        bos: BOS id.
        eos: EOS id.
        dtype: The stream's dtype (`stream_dtype`).

    Returns:
        (train, val): each doc EOS ... (BOS doc EOS ... when bos != eos), shapes (N_train,), (N_val,).
    """
    wrap_bos = [bos] if bos != eos else []
    parts: tuple[list[int], list[int]] = ([], [])
    for enc, val in zip(tok.encode_batch(texts, add_special_tokens=False), is_val.tolist(), strict=True):
        out = parts[val]
        out.extend(wrap_bos)
        out.extend(enc.ids)
        out.append(eos)
    return np.array(parts[0], dtype=dtype), np.array(parts[1], dtype=dtype)


# -- worker processes (spawned: they import this module and numpy/tokenizers, not torch) --------

_WORKER_TOKENIZER: Tokenizer | None = None


def init_worker(tokenizer_json: str) -> None:
    """Pool initialiser: one single-threaded tokenizer per process (no nested rayon threads); Ctrl-C
    is left to the parent (which stops the pool), and the process ends when its parent dies."""
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:  # a parent killed with SIGKILL cannot stop its pool: leave on our own
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def _exit_with(parent) -> None:
    parent.join()
    os._exit(1)


def worker_pack_chunk(texts: list[str], is_val: np.ndarray, bos: int, eos: int,
                      dtype) -> tuple[np.ndarray, np.ndarray]:
    """`pack_chunk` with the tokenizer `init_worker` loaded in this process."""
    return pack_chunk(_WORKER_TOKENIZER, texts, is_val, bos, eos, dtype)
