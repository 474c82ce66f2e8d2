"""Token shards (`python -m ltm.prepare`): the same blocks and batches as the in-memory path, the
same bytes for any --num-proc and after an interruption, and one sentence for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ltm.core.errors import ConfigError, DataError, MissingFileError
from ltm.data import BatchIterator, DataConfig, TokenBlocks, prepare_data
from ltm.data import tokenizer as tk
from ltm.data.shard_prep import ShardConfig, prepare_shards
from ltm.data.shards import ShardedTokens
from tests.data.test_data import make_docs, write_jsonl

SMALL = {"vocab_size": 300, "val_fraction": 0.2}
TINY_SHARDS = {"shard_tokens": 700, "chunk_chars": 1500}  # several chunks per shard, ~10 shards


def quiet(_: str) -> None:
    pass


def prepare(tmp_path: Path, name: str, dataset, num_proc: int = 1, **kw) -> Path:
    cfg = ShardConfig(dataset=str(dataset), **{**SMALL, **TINY_SHARDS, **kw})
    prepare_shards(cfg, tmp_path / name, num_proc=num_proc, log=quiet)
    return tmp_path / name


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", make_docs(240))


def shared_separator_tokenizer(tmp_path: Path) -> Path:
    """A BPE whose only special token, <|endoftext|>, is both BOS and EOS (as GPT-2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_docs(50, seed=5), trainer)
    tok.save(str(tmp_path / "eot.json"))
    return tmp_path / "eot.json"


@pytest.mark.parametrize("shared", [False, True], ids=["bos-eos", "shared-separator"])
def test_shards_give_the_in_memory_blocks_and_batches(corpus, tmp_path, shared):
    tokenizer = str(shared_separator_tokenizer(tmp_path)) if shared else "bpe"
    memory = prepare_data(DataConfig(dataset=str(corpus), tokenizer=tokenizer, block_size=16, **SMALL),
                          tmp_path / "cache")
    folder = prepare(tmp_path, "shards", corpus, tokenizer=tokenizer)
    sharded = prepare_data(DataConfig(dataset=str(folder), block_size=16), tmp_path / "unused")
    assert len(json.loads((folder / "index.json").read_text())["shards"]) >= 5
    assert (memory.bos_id == memory.eos_id) == shared
    assert sharded.tokenizer.to_str() == memory.tokenizer.to_str()
    assert (sharded.bos_id, sharded.eos_id, sharded.pad_id) == (memory.bos_id, memory.eos_id, memory.pad_id)
    for split in ("train", "val"):
        ours, theirs = getattr(sharded, split), getattr(memory, split)
        assert isinstance(ours.tokens, ShardedTokens) and len(ours) == len(theirs) > 0
        assert np.asarray(ours.tokens).tobytes() == np.asarray(theirs.tokens).astype(np.uint16).tobytes()
    a, b = BatchIterator(memory.train, 8, seed=3), BatchIterator(sharded.train, 8, seed=3)
    for _ in range(3 * a.batches_per_epoch + 2):  # three epochs and a bit
        assert next(a).numpy().tobytes() == next(b).numpy().tobytes()
    for x, y in zip(memory.val.fixed_batches(4, 3), sharded.val.fixed_batches(4, 3), strict=True):
        assert torch.equal(x, y)
    assert not list(tmp_path.glob("unused"))  # a prepared folder is opened, nothing cached


def test_num_proc_one_and_two_write_the_same_bytes(corpus, tmp_path):
    one = prepare(tmp_path, "one", corpus, num_proc=1)
    two = prepare(tmp_path, "two", corpus, num_proc=2)
    assert contents(one) == contents(two)


def test_an_interrupted_run_resumes_to_the_same_bytes(corpus, tmp_path):
    straight = contents(prepare(tmp_path, "straight", corpus))
    cfg = ShardConfig(dataset=str(corpus), **SMALL, **TINY_SHARDS)
    out = tmp_path / "stopped"

    def crash_after_two(k: int) -> None:
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_shards(cfg, out, on_shard=crash_after_two, log=quiet)
    index = json.loads((out / "index.json").read_text())
    assert len(index["shards"]) == 3 and not index["complete"]
    (out / "train-00003.bin.tmp").write_bytes(b"half a shard")  # as a kill mid-shard leaves it
    (out / "val-00007.bin").write_bytes(b"renamed, not yet indexed")
    seen: list[int] = []
    messages: list[str] = []
    prepare_shards(cfg, out, on_shard=seen.append, log=messages.append)
    assert seen[0] == 3 and "resuming" in messages[0]  # finished shards are not encoded again
    assert contents(out) == straight
    prepare_shards(cfg, out, on_shard=seen.append, log=messages.append)  # finished: nothing to do
    assert "nothing to do" in messages[-1] and contents(out) == straight


def test_sharded_tokens_index_like_one_array(tmp_path):
    parts = [np.arange(0, 7), np.arange(7, 7), np.arange(7, 20), np.arange(20, 23)]
    files = []
    for k, part in enumerate(parts):
        files.append(tmp_path / f"{k}.bin")
        part.astype(np.uint16).tofile(files[-1])
    arrays = [np.memmap(f, dtype=np.uint16, mode="r") if len(p) else np.zeros(0, np.uint16)
              for f, p in zip(files, parts, strict=True)]
    tokens, whole = ShardedTokens(arrays), np.arange(23, dtype=np.uint16)
    assert tokens.shape == (23,) and len(tokens) == 23
    for lo, hi in [(0, 23), (5, 9), (6, 7), (7, 8), (19, 21), (22, 23), (3, 3), (0, 30)]:
        assert np.array_equal(tokens[lo:hi], whole[lo:hi])
    rows = np.array([[0, 6, 7], [19, 20, 22]])  # (2, 3), across the shard boundaries
    assert np.array_equal(tokens[rows], whole[rows]) and tokens[rows].shape == (2, 3)
    blocks = TokenBlocks(tokens, block_size=4)
    reference = TokenBlocks(whole, block_size=4)
    assert len(blocks) == len(reference) == 5
    for i in range(5):
        assert torch.equal(blocks[i], reference[i])


def test_the_batch_iterator_resumes_mid_shard_exactly(corpus, tmp_path):
    folder = prepare(tmp_path, "shards", corpus)
    train = prepare_data(DataConfig(dataset=str(folder), block_size=16), tmp_path).train
    it = BatchIterator(train, batch_size=8, seed=1)
    straight = [next(it) for _ in range(it.batches_per_epoch + 5)]
    for cut in (3, it.batches_per_epoch + 1):  # mid-epoch and mid-shard, and into the next epoch
        it = BatchIterator(train, batch_size=8, seed=1)
        for _ in range(cut):
            next(it)
        resumed = BatchIterator(train, batch_size=8, seed=1)
        resumed.load_state_dict(json.loads(json.dumps(it.state_dict())))
        for expected in straight[cut:]:
            assert torch.equal(next(resumed), expected)


class FakeStream:
    """A streaming dataset as a hub gives one: re-iterable rows, no length."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __iter__(self):
        return iter([dict(r) for r in self.rows])


def test_streamed_rows_give_the_same_shards_as_the_file(corpus, tmp_path):
    from datasets import load_dataset

    cfg = ShardConfig(dataset=str(corpus), **SMALL, **TINY_SHARDS)
    from_file = contents(prepare(tmp_path, "file", corpus))
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    stream = load_dataset("json", data_files=[str(corpus)], split="train", streaming=True)
    for name, source in (("fake", FakeStream(rows)), ("datasets", stream)):
        prepare_shards(cfg, tmp_path / name, rows=source, log=quiet)
        got = contents(tmp_path / name)
        assert {k: v for k, v in got.items() if k != "index.json"} == \
            {k: v for k, v in from_file.items() if k != "index.json"}, name


def test_bad_input_is_one_sentence_before_anything_is_written(corpus, tmp_path):
    out = tmp_path / "out"
    cfg = ShardConfig(dataset=str(corpus), **SMALL)
    with pytest.raises(ConfigError, match="--num-proc must be at least 1, got 0"):
        prepare_shards(cfg, out, num_proc=0, log=quiet)
    rows = FakeStream([{"body": "a text", "id": 1}])
    with pytest.raises(DataError, match=r"no column 'text'; its columns are \['body', 'id'\]"):
        prepare_shards(ShardConfig(dataset="my/stream", **SMALL), out, rows=rows, log=quiet)
    blank = write_jsonl(tmp_path / "blank.jsonl", ["", "   "])
    with pytest.raises(DataError, match="has no text in field 'text'"):
        prepare_shards(ShardConfig(dataset=str(blank), **SMALL), out, log=quiet)
    with pytest.raises(DataError, match="no text in field 'text'"):
        prepare_shards(ShardConfig(dataset="empty", **SMALL), out, rows=FakeStream([]), log=quiet)
    with pytest.raises(MissingFileError, match="data path .*nope.* does not exist"):
        prepare_shards(ShardConfig(dataset=str(tmp_path / "nope.jsonl")), out, log=quiet)
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and holds no finished or interrupted preparation"):
        prepare_shards(cfg, out, log=quiet)
    folder = prepare(tmp_path, "done", corpus)
    with pytest.raises(ConfigError, match=r"other settings \(seed: 0 there, 1 now\).*--overwrite"):
        prepare_shards(ShardConfig(dataset=str(corpus), **SMALL, **TINY_SHARDS, seed=1), folder, log=quiet)


def test_an_index_that_does_not_match_its_shards_is_refused(corpus, tmp_path):
    good = prepare(tmp_path, "good", corpus)

    def broken(name: str, edit) -> DataConfig:
        folder = tmp_path / name
        folder.mkdir()
        for p in good.iterdir():
            (folder / p.name).write_bytes(p.read_bytes())
        index = json.loads((folder / "index.json").read_text())
        edit(folder, index)
        (folder / "index.json").write_text(json.dumps(index))
        return DataConfig(dataset=str(folder), block_size=16)

    def set_dtype(dtype):
        return lambda folder, index: index.update(dtype=dtype)

    def set_tokens(folder, index):
        index["shards"][1]["train"]["tokens"] += 1

    cases = [
        ("missing", lambda folder, index: (folder / "train-00002.bin").unlink(), MissingFileError,
         r"shard .*train-00002.bin.* listed in .*index.json.* is missing"),
        ("short", lambda folder, index: (folder / "val-00001.bin").write_bytes(b"\0\0"), DataError,
         r"shard .*val-00001.bin.* holds 2 bytes but .* lists \d+ uint16 tokens"),
        ("count", set_tokens, DataError, r"train-00001.bin.* holds \d+ bytes but .* lists \d+ uint16"),
        ("wide", set_dtype("uint32"), DataError, r"train-00000.bin.* holds \d+ bytes but .* uint32 tokens"),
        ("float", set_dtype("float32"), DataError, r"gives dtype 'float32', but shards are one of"),
        ("unfinished", lambda folder, index: index.update(complete=False), DataError,
         "is incomplete .* running python -m ltm.prepare again with the same arguments"),
        ("foreign", lambda folder, index: index.update(format="other"), DataError,
         "is not an ltm token-shard index"),
    ]
    for name, edit, kind, message in cases:
        with pytest.raises(kind, match=message):
            prepare_data(broken(name, edit), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    other = tk.train_bpe(make_docs(30, seed=9), 280)
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(ConfigError, match="was tokenized with another tokenizer than"):
        prepare_data(DataConfig(dataset=str(good), tokenizer=str(tmp_path / "other.json")), tmp_path)


def test_streamed_documents_are_the_in_memory_documents(tmp_path):
    import gzip
    import random

    from datasets import Dataset

    from ltm.data.corpus import load_documents
    from ltm.data.doc_stream import DocumentStream

    folder = tmp_path / "data"
    folder.mkdir()
    rng = random.Random(0)
    seps = ["\n\n", "\n\n\n", "\n \n", "\n\n\n\n", "\n"]  # runs of blank lines across the 1 MB reads
    (folder / "a.txt").write_text("".join(" ".join(make_docs(1, seed=i)) + rng.choice(seps)
                                          for i in range(9000)))
    with gzip.open(folder / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "From gzipped json."}) + "\n" + json.dumps({"text": "   "}) + "\n")
    (folder / "c.csv").write_text("text,label\nFrom csv.,1\n")
    Dataset.from_dict({"text": ["From parquet."]}).to_parquet(str(folder / "d.parquet"))
    assert (folder / "a.txt").stat().st_size > 1.2e6
    expected = load_documents(str(folder), "text", tmp_path / "hf")
    stream = DocumentStream(str(folder))
    assert stream.count() == len(expected)
    assert list(stream.documents()) == expected
    assert list(stream.documents(len(expected) - 3)) == expected[-3:]  # whole files skipped
    capped = DocumentStream(str(folder), max_documents=5)
    assert capped.count() == 5 and list(capped.documents()) == expected[:5]


def test_overwrite_keeps_the_old_folder_until_the_new_source_reads(corpus, tmp_path):
    folder = prepare(tmp_path, "done", corpus)
    before = contents(folder)
    blank = write_jsonl(tmp_path / "blank.jsonl", ["", "   "])
    with pytest.raises(DataError, match="no text in field"):
        prepare_shards(ShardConfig(dataset=str(blank), **SMALL), folder, overwrite=True, log=quiet)
    assert contents(folder) == before
    cfg = ShardConfig(dataset=str(corpus), **SMALL, **TINY_SHARDS, seed=1)
    prepare_shards(cfg, folder, overwrite=True, log=quiet)
    assert json.loads((folder / "index.json").read_text())["config"]["seed"] == 1
    assert contents(folder) == contents(prepare(tmp_path, "fresh", corpus, seed=1))


class ShrinkingStream(FakeStream):
    """Rows that change between passes: fewer on every iteration after the first."""

    def __iter__(self):
        rows, self.rows = self.rows, self.rows[:-10]
        return iter(rows)


def test_a_source_that_changes_between_passes_is_refused(corpus, tmp_path):
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    cfg = ShardConfig(dataset="changing", **SMALL, **TINY_SHARDS, tokenizer=str(shared_separator_tokenizer(
        tmp_path)))
    with pytest.raises(DataError, match=r"gave \d+ documents on this pass but 240 when they were counted"):
        prepare_shards(cfg, tmp_path / "out", rows=ShrinkingStream(rows), log=quiet)
