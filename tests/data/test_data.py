"""Data layer: tokenizer, corpus loading, packing, split, cache, batch order, errors."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltm.data import BatchIterator, DataConfig, TokenBlocks, decode, embedded_documents, encode, prepare_data
from ltm.data import prepare as prep
from ltm.data import tokenizer as tk
from ltm.data.corpus import load_documents
from ltm.data.embedded import __file__ as EMBEDDED_SOURCE

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WORDS = ("the a cat dog sat on mat and ran far away from home to see bird tree house big small red blue "
         "quickly slowly under over with of in is was were they we you it this that").split()


def make_docs(n: int = 60, seed: int = 0) -> list[str]:
    """Deterministic English-ish documents of 2-5 sentences."""
    rng = random.Random(seed)
    return [" ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
                     for _ in range(rng.randint(2, 5))) for _ in range(n)]


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> tuple[Path, list[str]]:
    docs = make_docs()
    return write_jsonl(tmp_path / "docs.jsonl", docs), docs


def small_cfg(path: Path, **kw) -> DataConfig:
    kw = {"dataset": str(path), "vocab_size": 300, "block_size": 16, "val_fraction": 0.2, **kw}
    return DataConfig(**kw)


def split_stream(stream: np.ndarray, bos: int, eos: int) -> list[list[int]]:
    """Documents' ids from a packed BOS doc EOS ... stream."""
    docs, cur = [], None
    for t in stream.tolist():
        if t == bos:
            cur = []
        elif t == eos:
            docs.append(cur)
        else:
            cur.append(t)
    return docs


# ---------------------------------------------------------------- tokenizer


def test_encode_decode_round_trip():
    tok = tk.train_bpe(make_docs(), vocab_size=300)
    assert tok.get_vocab_size() == 300
    for text in ["The cat sat on the mat.", "  spaces\tand\nnewlines  ", "unicode: wörld 🤖 ñ", ""]:
        assert decode(tok, encode(tok, text)) == text
    bos, eos, pad = tk.special_ids(tok)
    assert len({bos, eos, pad}) == 3
    ids = encode(tok, "the dog", bos=True, eos=True)
    assert ids[0] == bos and ids[-1] == eos
    assert decode(tok, torch.tensor(ids)) == "the dog"
    assert decode(tok, ids, skip_special_tokens=False) == "<|bos|>the dog<|eos|>"


def test_loaded_tokenizer_without_specials_gets_them(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    bare.save(str(tmp_path / "tokenizer.json"))
    tok = tk.load_tokenizer(tmp_path / "tokenizer.json")
    bos, eos, pad = tk.special_ids(tok)
    assert (bos, eos, pad) == (3, 4, 4)  # added <|bos|>, <|eos|>; PAD falls back to EOS
    assert encode(tok, "hello world", bos=True, eos=True) == [3, 0, 1, 4]


def test_bpe_training_is_deterministic():
    assert tk.train_bpe(make_docs(), 320).to_str() == tk.train_bpe(make_docs(), 320).to_str()


# ---------------------------------------------------------------- blocks and packing


def test_blocks_shape_and_stream(corpus_file, tmp_path):
    path, docs = corpus_file
    data = prepare_data(small_cfg(path), tmp_path / "cache")
    T, train = 16, data.train
    assert len(train) == (train.num_tokens - 1) // T > 4
    block = train[0]
    assert block.shape == (T + 1,) and block.dtype == torch.long
    # consecutive blocks share one boundary token; together they are the stream minus a ragged tail
    joined = torch.cat([train[0]] + [train[i][1:] for i in range(1, len(train))])
    stream = torch.from_numpy(np.asarray(train.tokens[: len(train) * T + 1], dtype=np.int64))
    assert torch.equal(joined, stream)
    assert torch.equal(train[-1], train[len(train) - 1])
    idx = [3, 0, len(train) - 1]
    assert torch.equal(train.batch(idx), torch.stack([train[i] for i in idx]))
    assert train.batch(torch.tensor(idx)).shape == (3, T + 1)
    with pytest.raises(IndexError):
        train[len(train)]
    # the stream is BOS doc EOS ...: each document decodes back to a source document
    train_docs = [decode(data.tokenizer, ids) for ids in split_stream(np.asarray(train.tokens), data.bos_id,
                                                                       data.eos_id)]
    assert train_docs and all(d in docs for d in train_docs)
    assert data.vocab_size == data.tokenizer.get_vocab_size() <= 300


def test_block_size_one_and_shared_separator():
    blocks = TokenBlocks(np.arange(10, dtype=np.uint16), block_size=3)
    assert len(blocks) == 3 and blocks[1].tolist() == [3, 4, 5, 6] and blocks[2].tolist() == [6, 7, 8, 9]
    assert len(TokenBlocks(np.arange(4), 3)) == 1 and len(TokenBlocks(np.arange(3), 3)) == 0
    tok = tk.train_bpe(make_docs(), 300)
    stream = prep.pack(tok, ["a b", "c"], bos=7, eos=7, desc="")
    assert stream[0] == 7 and (stream == 7).sum() == 3  # E doc E doc E when BOS == EOS


# ---------------------------------------------------------------- split


def test_split_deterministic_and_disjoint(corpus_file, tmp_path):
    train, val = prep.split_documents(100, 0.1, seed=3)
    train2, val2 = prep.split_documents(100, 0.1, seed=3)
    assert np.array_equal(train, train2) and np.array_equal(val, val2) and len(val) == 10
    assert not set(train) & set(val) and set(train) | set(val) == set(range(100))
    assert not np.array_equal(val, prep.split_documents(100, 0.1, seed=4)[1])

    path, docs = corpus_file
    a = prepare_data(small_cfg(path), tmp_path / "c1")
    b = prepare_data(small_cfg(path), tmp_path / "c2")  # a fresh cache gives the same bytes
    for split in ("train", "val"):
        assert np.array_equal(getattr(a, split).tokens, getattr(b, split).tokens)
    tr = {decode(a.tokenizer, d) for d in split_stream(np.asarray(a.train.tokens), a.bos_id, a.eos_id)}
    va = {decode(a.tokenizer, d) for d in split_stream(np.asarray(a.val.tokens), a.bos_id, a.eos_id)}
    assert va and not tr & va and tr | va == set(docs)


# ---------------------------------------------------------------- cache


def test_second_call_hits_cache(corpus_file, tmp_path, monkeypatch):
    path, _ = corpus_file
    cfg = small_cfg(path)
    first = prepare_data(cfg, tmp_path / "cache")
    assert not first.from_cache
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.cache_path.iterdir()}

    def boom(*args, **kwargs):
        raise AssertionError("retokenized on a cache hit")

    monkeypatch.setattr(prep, "pack", boom)
    monkeypatch.setattr(prep.corpus, "load_documents", boom)
    second = prepare_data(cfg, tmp_path / "cache")
    assert second.from_cache and second.cache_path == first.cache_path
    everything = range(len(first.train))
    assert torch.equal(second.train.batch(everything), first.train.batch(everything))
    assert {p.name: p.stat().st_mtime_ns for p in second.cache_path.iterdir()} == mtimes
    other = prepare_data(small_cfg(path, block_size=8), tmp_path / "cache")  # block size: same streams
    assert other.from_cache and other.train[0].shape == (9,)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_no_validation_split(corpus_file, tmp_path):
    data = prepare_data(small_cfg(corpus_file[0], val_fraction=0.0), tmp_path)
    assert len(data.val) == 0 and data.val.num_tokens == 0 and len(data.train) > 0


# ---------------------------------------------------------------- batch order


def test_batch_iterator_resume_equals_straight():
    blocks = TokenBlocks(np.arange(23 * 4 + 1), block_size=4)  # 23 blocks
    it = BatchIterator(blocks, batch_size=5, seed=1)
    assert it.batches_per_epoch == 4  # the ragged 3 are dropped
    straight = [next(it) for _ in range(13)]  # three epochs and a bit
    assert straight[0].shape == (5, 5)
    firsts = [int(b[0, 0]) // 4 for b in straight]
    epoch0 = [i for b in straight[:4] for i in (b[:, 0] // 4).tolist()]
    assert len(set(epoch0)) == 20 and firsts[:4] != firsts[4:8]  # no repeats in an epoch; orders differ
    for cut in (0, 3, 4, 9):
        it = BatchIterator(blocks, batch_size=5, seed=1)
        for _ in range(cut):
            next(it)
        state = json.loads(json.dumps(it.state_dict()))  # survives a checkpoint round trip
        resumed = BatchIterator(blocks, batch_size=5, seed=1)
        resumed.load_state_dict(state)
        for expected in straight[cut:]:
            assert torch.equal(next(resumed), expected)
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(blocks, batch_size=6, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="number of blocks"):
        BatchIterator(blocks, batch_size=24, seed=1)


# ---------------------------------------------------------------- loaders


def test_folder_of_mixed_formats(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("First paragraph\nstill first.\n\nSecond paragraph.\n")
    with gzip.open(folder / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "From gzipped json."}) + "\n" + json.dumps({"text": "   "}) + "\n")
    (folder / "c.csv").write_text("text,label\nFrom csv.,1\n")
    Dataset.from_dict({"text": ["From parquet."]}).to_parquet(str(folder / "d.parquet"))
    (folder / "README.md").write_text("ignored")
    docs = load_documents(str(folder), "text", tmp_path / "hf")
    assert docs == ["First paragraph\nstill first.", "Second paragraph.", "From gzipped json.", "From csv.",
                    "From parquet."]


# ---------------------------------------------------------------- errors


def test_bad_inputs_say_what_to_do(corpus_file, tmp_path):
    path, docs = corpus_file
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="data path .*nope.txt.* does not exist"):
        prepare_data(small_cfg(tmp_path / "nope.txt"), cache)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt.* is empty"):
        prepare_data(small_cfg(tmp_path / "empty.txt"), cache)
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="holds no data files"):
        prepare_data(small_cfg(tmp_path / "void"), cache)
    (tmp_path / "data.xyz").write_text("text")
    with pytest.raises(ValueError, match="unknown extension '.xyz'"):
        prepare_data(small_cfg(tmp_path / "data.xyz"), cache)
    other = write_jsonl(tmp_path / "body.jsonl", docs, field="body")
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are \['body', 'id'\]"):
        prepare_data(small_cfg(other), cache)
    blank = write_jsonl(tmp_path / "blank.jsonl", ["", "  "])
    with pytest.raises(ValueError, match="no text in field 'text'"):
        prepare_data(small_cfg(blank), cache)
    too_short = r"train split .* has \d+ tokens but one block needs block_size \+ 1 = 100001"
    with pytest.raises(ValueError, match=too_short):
        prepare_data(small_cfg(path, block_size=100_000), cache)
    with pytest.raises(ValueError, match=r"validation split .* use block_size <= \d+"):
        prepare_data(small_cfg(path, block_size=400, val_fraction=0.02), cache)
    with pytest.raises(ValueError, match="vocab_size=100 is too small .* at least 259"):
        prepare_data(small_cfg(path, vocab_size=100), cache)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="could not read tokenizer file"):
        prepare_data(small_cfg(path, tokenizer=str(bad)), cache)
    with pytest.raises(FileNotFoundError, match="tokenizer file .* does not exist"):
        prepare_data(small_cfg(path, tokenizer=str(tmp_path / "missing.json")), cache)
    one = write_jsonl(tmp_path / "one.jsonl", docs[:1])
    with pytest.raises(ValueError, match="only 1 document"):
        prepare_data(small_cfg(one), cache)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 to fail fast")
def test_unknown_hub_name_offline(tmp_path):
    with pytest.raises(ValueError, match="no local path and could not be loaded from the hub"):
        prepare_data(DataConfig(dataset="no-such-org/no-such-dataset"), tmp_path)


# ---------------------------------------------------------------- embedded corpus

# Load embedded.py by path (stdlib only, no torch import) and hash its first modules' documents.
_DIGEST = """import hashlib, importlib.util as u, sys
spec = u.spec_from_file_location("embedded", sys.argv[1]); m = u.module_from_spec(spec)
spec.loader.exec_module(m)
print(hashlib.sha256("\\x00".join(m.embedded_documents(25)).encode()).hexdigest())"""


def test_embedded_corpus_is_english_and_deterministic(tmp_path):
    docs = embedded_documents()
    text = "\n".join(docs)
    assert len(docs) > 300 and len(text) > 500_000
    words = text.lower().split()
    for w in ("the", "function", "return", "object", "should"):
        assert words.count(w) > 100, w
    head = embedded_documents(25)  # the first 25 modules (some have no docstrings)
    assert 10 < len(head) <= 25 and head == docs[:len(head)]
    # a fresh interpreter with another hash seed builds the same text
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    cmd = [sys.executable, "-c", _DIGEST, EMBEDDED_SOURCE]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256("\x00".join(embedded_documents(25)).encode()).hexdigest()
    data = prepare_data(DataConfig(max_documents=40, vocab_size=300, block_size=64), tmp_path)
    assert len(data.train) > 10 and len(data.val) >= 1
    assert " the " in decode(data.tokenizer, data.train[0])


# ---------------------------------------------------------------- shared data (when present)


@pytest.mark.skipif(not (SHARED / "tokenizers" / "gpt2" / "tokenizer.json").is_file()
                    or not (SHARED / "tinyshakespeare" / "input.txt").is_file(),
                    reason=f"shared data not found at {SHARED} (tinyshakespeare/input.txt, tokenizers/gpt2)")
def test_tinyshakespeare_with_gpt2_tokenizer(tmp_path):
    cfg = DataConfig(dataset=str(SHARED / "tinyshakespeare" / "input.txt"), max_documents=300, block_size=32,
                     tokenizer=str(SHARED / "tokenizers" / "gpt2" / "tokenizer.json"))
    data = prepare_data(cfg, tmp_path)
    assert data.vocab_size == 50257 and data.bos_id == data.eos_id == data.pad_id == 50256
    assert data.train[0][0].item() == 50256
    text = decode(data.tokenizer, data.train.batch(range(len(data.train))).flatten())
    assert "Citizen" in text
    assert encode(data.tokenizer, "To be, or not to be") == [2514, 307, 11, 393, 407, 284, 307]


def test_a_zip_archive_gives_one_document_per_text_member_in_a_list_of_encodings(tmp_path):
    import zipfile

    from ltm.core.errors import DataError
    from ltm.data.corpus import load_documents

    path = tmp_path / "addresses.zip"
    first, second = "Fellow-Citizens of the Senate.\n\nAmong the changes.", "Vice President \xa1 and all."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("addresses/1789-Washington.txt", first)
        archive.writestr("addresses/2005-Bush.txt", second.encode("latin-1"))
        archive.writestr("addresses/README", "not text data")
    docs = load_documents(str(path), "text", tmp_path / "hf", encoding="utf-8,latin-1")
    assert docs == [first, second]
    with pytest.raises(DataError, match=r"member 'addresses/2005-Bush.txt' of .* is not valid utf-8 text "
                                        r"\(byte b'\\xa1' at offset 15\); name its encoding"):
        load_documents(str(path), "text", tmp_path / "hf")
