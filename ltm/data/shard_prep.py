"""Tokenize a corpus of any size into token shards, in worker processes, with bounded memory.

    from ltm.data.shard_prep import ShardConfig, prepare_shards
    prepare_shards(ShardConfig(dataset="corpus/", tokenizer="gpt2/tokenizer.json"), "prepared/",
                   num_proc=8)
    # then: python -m ltm.train --dataset prepared/

Passes over the source (`ltm.data.doc_stream`, never held in memory): (1) count the documents
and check the text field, then draw the train/validation split exactly as the in-memory path does
(`split_documents`: a seeded permutation of the document indices, kept as one flag per document);
(2) with tokenizer="bpe", train the BPE on the training documents, streamed; (3) read the documents
in chunks of about `chunk_chars` characters, which `num_proc` processes encode (at most two chunks
per process in flight), while this process writes the packed tokens in order into shard k of
each split. A shard closes at the first chunk boundary where its training part holds
`shard_tokens` tokens or more, so the shards do not depend on `num_proc`.

Every file is written to a temporary name and renamed into place, and the index (`index.json`)
is rewritten after each shard; a run stopped at any point and started again with the same
settings goes on after its last finished shard, and ends with the same bytes as a straight run.
The workers are started with "spawn" (no fork of a threaded process); a script that calls
`prepare_shards` with num_proc > 1 needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
from tqdm.auto import tqdm

from ltm.core.errors import ConfigError, DataError, MissingFileError
from ltm.data import corpus, packing, shards
from ltm.data import tokenizer as tk
from ltm.data.doc_stream import DocumentStream

_IN_FLIGHT = 2  # chunks queued per worker process


@dataclass
class ShardConfig:
    """What to tokenize and how; the fields shared with `DataConfig` mean the same.

    Attributes:
        dataset: "embedded", a local file or folder (.txt, .jsonl/.json, .parquet, .csv/.tsv,
            optionally compressed, or .zip), or a hub dataset name (streamed).
        text_field: Column holding the text (json/parquet/csv and hub rows).
        split: Split of a hub dataset.
        tokenizer: "bpe" to train a byte-level BPE on the training split, or a tokenizer.json path.
        vocab_size: Size of the trained BPE (at least 259); ignored for a tokenizer.json.
        val_fraction: Fraction of documents held out for validation (0 for none).
        seed: Seed of the document split.
        max_documents: Use only the first this many documents (None for all).
        encoding: Text encoding of local text files, or a comma list tried in order per file.
        shard_tokens: Training tokens per shard (a shard closes at the first chunk boundary past it).
        chunk_chars: Characters of text per chunk sent to a worker (about).
    """

    dataset: str = "embedded"
    text_field: str = "text"
    split: str = "train"
    tokenizer: str = "bpe"
    vocab_size: int = 512
    val_fraction: float = 0.05
    seed: int = 0
    max_documents: int | None = None
    encoding: str = "utf-8"
    shard_tokens: int = 2**25
    chunk_chars: int = 1_000_000


def check_config(cfg: ShardConfig, num_proc: int) -> None:
    """Refuse settings that cannot work, before anything is read or written.

    Raises:
        ConfigError: A count below its minimum or a fraction outside [0, 1).
        MissingFileError: A tokenizer.json that does not exist.
    """
    if num_proc < 1:
        raise ConfigError(f"--num-proc must be at least 1, got {num_proc}.")
    for name in ("shard_tokens", "chunk_chars"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}.")
    packing.check_split(cfg.val_fraction, cfg.max_documents)
    tk.check_tokenizer_choice(cfg.tokenizer, cfg.vocab_size, "--tokenizer bpe")


def _fingerprint(cfg: ShardConfig, rows) -> dict:
    """What the output depends on besides the settings: the files' and the tokenizer's sizes/times."""
    data = {"rows": cfg.dataset} if rows is not None else corpus.fingerprint(cfg.dataset)
    if cfg.tokenizer != "bpe":
        path = Path(cfg.tokenizer).expanduser().resolve()
        data["tokenizer"] = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
    return _json_ready(data)


def _json_ready(obj):
    """`obj` with tuples as lists, as it reads back from JSON (so saved and fresh values compare)."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def prepare_shards(cfg: ShardConfig, out_dir: str | Path, num_proc: int = 1, rows: Iterable | None = None,
                   overwrite: bool = False, on_shard: Callable[[int], None] | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Tokenize `cfg.dataset` (or `rows`) into shards in `out_dir`; resume an interrupted run there.

    Args:
        cfg: What to tokenize and how.
        out_dir: The folder to write (created); one holding a finished preparation with the same
            settings is left as it is, an unfinished one is resumed.
        num_proc: Processes that encode (1: this process alone).
        rows: Rows to read instead of `cfg.dataset` (e.g. a streaming `datasets.IterableDataset`),
            iterated once per pass, in the same order each time; `cfg.dataset` then only names them.
        overwrite: Delete an earlier preparation in `out_dir` (with other settings) and start again.
        on_shard: Called with each shard's number once the shard and the index are on disk.
        log: Where the one-line messages go.

    Returns:
        The index written to `out_dir/index.json`.

    Raises:
        ConfigError: Bad settings, or `out_dir` holding other files or another preparation.
        MissingFileError: A missing data path or tokenizer file.
        DataError: Unreadable or empty data, a missing text field, too few documents to split.
    """
    check_config(cfg, num_proc)
    out = Path(out_dir).expanduser()
    stream = DocumentStream(cfg.dataset, cfg.text_field, cfg.split, cfg.encoding, cfg.max_documents, rows)
    fresh = {"format": shards.FORMAT, "version": shards.FORMAT_VERSION, "config": dataclasses.asdict(cfg),
             "fingerprint": _fingerprint(cfg, rows)}
    index = _earlier_run(out, fresh, overwrite)
    if index is not None and index["complete"]:
        log(f"{out} already holds this preparation ({len(index['shards'])} shards); nothing to do")
        return index
    if index is None:
        stream.count()
        if cfg.val_fraction > 0 and stream.num_documents < 2:
            raise DataError(f"dataset {cfg.dataset!r} has only {stream.num_documents} document; a train/"
                            f"validation split needs at least 2 (split the text into paragraphs, rows or "
                            f"files), or set val_fraction=0.")
    else:
        stream.restore(index["plan"])
        log(f"resuming {out} after shard {len(index['shards']) - 1} of an interrupted run")
    is_val = packing.val_mask(stream.num_documents, cfg.val_fraction, cfg.seed)  # (n,)
    if index is None:
        tok = _tokenizer(cfg, stream, is_val)
        index = _start(out, fresh, stream, tok, is_val)
    else:
        tok = tk.load_tokenizer(out / shards.TOKENIZER_FILE)
    _write_shards(out, index, stream, tok, is_val, num_proc, on_shard)
    index["complete"] = True
    shards.write_json_atomic(out / shards.INDEX_FILE, index)
    t = index["tokens"]
    log(f"prepared {out}: {len(index['shards'])} shards, {t['train']:,} train / {t['val']:,} val tokens "
        f"({index['dtype']}); train with python -m ltm.train --dataset {out}")
    return index


def _earlier_run(out: Path, fresh: dict, overwrite: bool) -> dict | None:
    """The index of an earlier run with the same settings in `out` (to resume or keep), or None."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ConfigError(f"--out-dir {str(out)!r} is a file; name a new or empty folder.")
    if overwrite:
        return None  # its files go once the new run's first pass has worked (`_start`)
    if not shards.is_prepared(out):
        ours = _our_files(out)
        if any(p not in ours for p in out.iterdir()):
            raise ConfigError(f"--out-dir {str(out)!r} is not empty and holds no finished or interrupted "
                              f"preparation; choose a new or empty folder, or pass --overwrite.")
        return None  # files of a run stopped before its first index: nothing to resume
    index = shards.read_index(out)
    for key in ("config", "fingerprint"):
        old, new = index.get(key, {}), fresh[key]
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            what = "the data or tokenizer files changed" if key == "fingerprint" else \
                ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed)
            raise ConfigError(f"--out-dir {str(out)!r} holds a preparation with other settings ({what}); run "
                              f"again with the same ones to resume or keep it, pass --overwrite to start "
                              f"again, or choose another folder.")
    if index["complete"]:
        shards.check_shards(out, index)
    else:
        _discard_unfinished(out, index)
    return index


def _our_files(out: Path) -> list[Path]:
    """The files a preparation writes in `out` (index, tokenizer, shards, temporaries)."""
    names = (shards.INDEX_FILE, shards.TOKENIZER_FILE)
    return [p for p in out.iterdir() if p.is_file() and (p.name in names or p.name.endswith(".tmp")
            or any(p.name.startswith(f"{s}-") and p.name.endswith(".bin") for s in shards.SPLITS))]


def _discard_unfinished(out: Path, index: dict) -> None:
    """Check the finished shards of an interrupted run; remove its temporaries and later shards."""
    keep = {s[split]["file"] for s in index["shards"] for split in shards.SPLITS}
    keep |= {shards.INDEX_FILE, shards.TOKENIZER_FILE}
    for p in _our_files(out):
        if p.name not in keep:
            p.unlink()
    try:
        shards.check_shards(out, index)
    except (DataError, MissingFileError) as err:
        raise DataError(f"{err} (the interrupted run in {str(out)!r} cannot be resumed: start again "
                        f"with --overwrite)") from None


def _tokenizer(cfg: ShardConfig, stream: DocumentStream, is_val: np.ndarray) -> tokenizers.Tokenizer:
    """The tokenizer.json given, or a BPE trained on the training documents, streamed."""
    if cfg.tokenizer != "bpe":
        return tk.load_tokenizer(Path(cfg.tokenizer).expanduser())
    train = (doc for doc, val in zip(stream.documents(), is_val.tolist(), strict=True) if not val)
    return tk.train_bpe(train, cfg.vocab_size, length=int((~is_val).sum()))


def _start(out: Path, fresh: dict, stream: DocumentStream, tok, is_val: np.ndarray) -> dict:
    """Write the tokenizer and a first index (no shards yet): the first writes of a run, after the
    files of an earlier preparation there (`--overwrite`, or one stopped before its index) are gone."""
    out.mkdir(parents=True, exist_ok=True)
    for p in _our_files(out):
        p.unlink()
    tmp = out / (shards.TOKENIZER_FILE + ".tmp")
    tok.save(str(tmp))
    os.replace(tmp, out / shards.TOKENIZER_FILE)
    bos, eos, pad = tk.special_ids(tok)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    n_val = int(is_val.sum())
    index = {**fresh, "plan": stream.plan(), "vocab_size": vocab, "bos_id": bos, "eos_id": eos, "pad_id": pad,
             "dtype": np.dtype(packing.stream_dtype(vocab)).name,
             "documents": {"train": stream.num_documents - n_val, "val": n_val},
             "shards": [], "tokens": {"train": 0, "val": 0}, "complete": False}
    shards.write_json_atomic(out / shards.INDEX_FILE, index)
    return index


def _chunks(stream: DocumentStream, start: int, chunk_chars: int) -> Iterator[tuple[list[str], int]]:
    """(texts, first document) of consecutive documents from `start`, about `chunk_chars`
    characters each; the same chunks follow a chunk boundary however it was reached."""
    texts, first, size = [], start, 0
    for doc in stream.documents(start):
        texts.append(doc)
        size += len(doc)
        if size >= chunk_chars:
            yield texts, first
            texts, first, size = [], first + len(texts), 0
    if texts:
        yield texts, first


@contextmanager
def _encoder(num_proc: int, tok) -> Iterator[Callable]:
    """A function mapping chunk tasks to their packed tokens, in order: in this process for one,
    else in `num_proc` spawned processes with at most `_IN_FLIGHT` tasks each queued."""
    if num_proc == 1:
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process, one thread: --num-proc means cores
        try:
            yield lambda tasks: ((task, packing.pack_chunk(tok, *task)) for task in tasks)
        finally:
            if saved is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_proc, initializer=packing.init_worker, initargs=(tok.to_str(),)) as pool:
        def run(tasks):
            pending: deque = deque()
            for task in tasks:
                pending.append((task, pool.apply_async(packing.worker_pack_chunk, task)))
                if len(pending) >= _IN_FLIGHT * num_proc:
                    task, result = pending.popleft()
                    yield task, result.get()
            while pending:
                task, result = pending.popleft()
                yield task, result.get()

        yield run


class _OpenShard:
    """Shard k of both splits being written: appended in order, then renamed into place."""

    def __init__(self, out: Path, k: int, first: np.ndarray):
        self.out, self.k = out, k
        self.files = {s: open(out / (shards.shard_name(s, k) + ".tmp"), "wb") for s in shards.SPLITS}
        self.tokens = dict.fromkeys(shards.SPLITS, 0)
        for split in shards.SPLITS:
            self.append(split, first)

    def append(self, split: str, tokens: np.ndarray) -> None:
        self.files[split].write(tokens.astype(tokens.dtype.newbyteorder("<"), copy=False).tobytes())
        self.tokens[split] += len(tokens)

    def commit(self) -> dict:
        entry = {}
        for split, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            name = shards.shard_name(split, self.k)
            os.replace(self.out / (name + ".tmp"), self.out / name)
            entry[split] = {"file": name, "tokens": self.tokens[split]}
        return entry

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _write_shards(out: Path, index: dict, stream: DocumentStream, tok, is_val: np.ndarray, num_proc: int,
                  on_shard: Callable[[int], None] | None) -> None:
    """Encode from the end of the last finished shard on and write the shards, the index after each."""
    cfg, dtype = index["config"], np.dtype(index["dtype"])
    bos, eos = index["bos_id"], index["eos_id"]
    done = index["shards"]
    start = done[-1]["next_document"] if done else 0
    chars_done = done[-1]["characters"] if done else 0
    lead = packing.leading_tokens(bos, eos, dtype)
    tasks = ((texts, is_val[first:first + len(texts)], bos, eos, dtype)
             for texts, first in _chunks(stream, start, cfg["chunk_chars"]))
    shard = None
    with (_encoder(num_proc, tok) as encode,
          tqdm(total=stream.num_characters, initial=chars_done, desc="tokenizing", unit="char",
               unit_scale=True, disable=stream.num_characters < packing._PROGRESS_CHARS) as bar):
        try:
            for (texts, _, _, _, _), (train, val) in encode(tasks):
                if shard is None:
                    shard = _OpenShard(out, len(done), lead if not done else lead[:0])
                shard.append("train", train)
                shard.append("val", val)
                start += len(texts)
                chars = sum(map(len, texts))
                chars_done += chars
                bar.update(chars)
                if shard.tokens["train"] >= cfg["shard_tokens"]:
                    _finish(out, index, shard, start, chars_done, on_shard)
                    shard = None
            if start != stream.num_documents:
                raise DataError(f"dataset {cfg['dataset']!r} gave {start} documents on this pass but "
                                f"{stream.num_documents} when they were counted: it changed during the "
                                f"preparation (or its rows come in another order each time); start again "
                                f"with --overwrite once it is fixed.")
            if shard is not None or not done:  # the last partial shard (or one empty shard)
                shard = shard or _OpenShard(out, 0, lead)
                _finish(out, index, shard, start, chars_done, on_shard)
                shard = None
        finally:
            if shard is not None:
                shard.close()


def _finish(out: Path, index: dict, shard: _OpenShard, next_document: int, characters: int,
            on_shard: Callable[[int], None] | None) -> None:
    entry = shard.commit()
    index["shards"].append({**entry, "next_document": next_document, "characters": characters})
    for split in shards.SPLITS:
        index["tokens"][split] += entry[split]["tokens"]
    shards.write_json_atomic(out / shards.INDEX_FILE, index)
    if on_shard is not None:
        on_shard(shard.k)
