"""Reasoning tasks as training data: one example per block, padded, one set of blocks per stage of
Coconut's curriculum.

Block i of every stage holds the same example (rendered at that stage: its first s steps replaced
by thoughts), so the batch order does not depend on the stage and a resumed run continues exactly;
the trainer moves the stage with `StagedBlocks.set_step`. Padding after EOS is scored like any
other target (it is predictable, and the same for every family). With `mask=question|steps` the
start of each example is left out of the loss: its ids are served marked (`ltm.core.loss_mask`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ltm.core.errors import ConfigError, DataError
from ltm.core.loss_mask import mask_targets
from ltm.data import tokenizer as tk
from ltm.data.blocks import TokenBlocks
from ltm.data.packing import split_documents
from ltm.data.reasoning import MARKERS, ReasoningCorpus


class RowBlocks(TokenBlocks):
    """Blocks of `block_size + 1` ids, one stored row each: rows (N, L), L <= T + 1, padded.

    Args:
        rows: Token ids (N, L), already padded with `pad_id` to a common length L.
        block_size: T; rows are padded on to T + 1.
        pad_id: The padding id.
        first_scored: Per row (N,), the position of its first id that is a target; ids 1 .. before
            it are served marked as unscored. None: every id after the first is a target.
    """

    def __init__(self, rows: np.ndarray, block_size: int, pad_id: int,
                 first_scored: np.ndarray | None = None):
        if block_size < 1:
            raise ConfigError(f"block_size must be at least 1, got {block_size}.")
        self.rows, self.block_size, self.pad_id = rows, block_size, pad_id  # (N, L)
        self.first_scored = None if first_scored is None else torch.from_numpy(
            first_scored.astype(np.int64))  # (N,)
        self.tokens = rows.reshape(-1)  # (N * L,)

    @property
    def num_tokens(self) -> int:
        return int(self.rows.size)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"block {i} out of range for {len(self)} blocks")
        return self.batch([int(i) % len(self)])[0]  # (T+1,)

    def batch(self, indices) -> torch.Tensor:
        idx = np.asarray(indices.tolist() if hasattr(indices, "tolist") else indices, dtype=np.int64)  # (B,)
        out = np.full((idx.size, self.block_size + 1), self.pad_id, dtype=np.int64)  # (B, T+1)
        out[:, :self.rows.shape[1]] = self.rows[idx]
        out = torch.from_numpy(out)  # (B, T+1)
        if self.first_scored is None:
            return out
        pos = torch.arange(out.shape[1])  # (T+1,)
        unscored = (pos >= 1) & (pos < self.first_scored[torch.from_numpy(idx)][:, None])  # (B, T+1)
        return mask_targets(out, unscored)

    def __repr__(self) -> str:
        return f"RowBlocks({len(self)} examples in blocks of {self.block_size}+1 tokens)"


class StagedBlocks:
    """The blocks of every curriculum stage (one `RowBlocks` each), serving the current stage's.

    Args:
        stages: Blocks of stage 0, 1, ..., S, the same examples in the same order.
        corpus: The reasoning corpus (its `stage_at` gives the stage of a training step).
    """

    def __init__(self, stages: list[RowBlocks], corpus: ReasoningCorpus):
        self.stages, self.corpus, self.stage = stages, corpus, 0

    def set_step(self, step: int) -> bool:
        """Serve the stage of training step `step`; True when that changed the stage."""
        stage = self.corpus.stage_at(step)
        changed, self.stage = stage != self.stage, stage
        return changed

    @property
    def current(self) -> RowBlocks:
        return self.stages[self.stage]

    @property
    def block_size(self) -> int:
        return self.current.block_size

    @property
    def num_tokens(self) -> int:
        return self.current.num_tokens

    def __len__(self) -> int:
        return len(self.current)

    def batch(self, indices) -> torch.Tensor:
        return self.current.batch(indices)  # (B, T+1)

    def fixed_batches(self, batch_size: int, num_batches: int) -> list[torch.Tensor]:
        return self.current.fixed_batches(batch_size, num_batches)


def _rows(tok, docs: list[str], bos: int, eos: int, pad: int) -> np.ndarray:
    """BOS + ids + EOS of each document, padded with `pad` to the longest: (N, L)."""
    ids = [[bos, *e.ids, eos] for e in tok.encode_batch(docs, add_special_tokens=False)]
    width = max((len(r) for r in ids), default=1)
    dtype = np.uint16 if tok.get_vocab_size(with_added_tokens=True) <= 65536 else np.uint32
    out = np.full((len(ids), width), pad, dtype=dtype)
    for i, r in enumerate(ids):
        out[i, :len(r)] = r
    return out


def _first_scored(tok, rows: np.ndarray, prefixes: list[str]) -> np.ndarray:
    """Per row (N,), the position after BOS and the ids of its unscored prefix (as far as the row's
    ids agree with the prefix's own: a BPE merge across the boundary ends it early)."""
    first = np.ones(len(prefixes), dtype=np.int32)
    for i, e in enumerate(tok.encode_batch(prefixes, add_special_tokens=False)):
        ids = np.asarray(e.ids, dtype=np.int64)  # (n,)
        row = rows[i, 1:1 + ids.size].astype(np.int64)  # (n,)
        agree = np.cumprod(row == ids[:row.size]) if ids.size else np.zeros(0, np.int64)
        first[i] = 1 + int(agree.sum())
    return first


def build_reasoning(cfg, corpus: ReasoningCorpus, out: Path) -> None:
    """Draw, split, tokenize and write every stage's rows (`train-S.npy`, `val-S.npy`; with a
    `mask`, the first scored position of each row in `train-S-scored.npy`, `val-S-scored.npy`), the
    tokenizer (with `<|bot|>`, `<|eot|>`, `<|thought|>` as ids 3, 4, 5 when trained here) and
    `meta.json` to `out`."""
    drawn = corpus.drawn(cfg.seed)
    stage_docs = [[e.text(corpus.with_steps, stage, corpus.thoughts) for e in drawn]
                  for stage in range(corpus.stages + 1)]
    train_idx, val_idx = split_documents(len(stage_docs[0]), cfg.val_fraction, cfg.seed)
    if cfg.tokenizer == "bpe":
        tk.check_bpe_vocab_size(cfg.vocab_size, len(MARKERS))
        tok = tk.train_bpe([stage_docs[0][i] for i in train_idx], cfg.vocab_size, extra_special=MARKERS)
    else:
        tok = tk.load_tokenizer(cfg.tokenizer)
        tok.add_special_tokens([m for m in MARKERS if tok.token_to_id(m) is None])
    bos, eos, pad = tk.special_ids(tok)
    tok.save(str(out / "tokenizer.json"))
    longest = 0
    for stage, docs in enumerate(stage_docs):
        for split, idx in (("train", train_idx), ("val", val_idx)):
            rows = _rows(tok, [docs[i] for i in idx], bos, eos, pad)  # (N, L)
            np.save(out / f"{split}-{stage}.npy", rows)
            if corpus.mask != "none":
                prefixes = [corpus.unscored_prefix(drawn[i], stage) for i in idx]
                np.save(out / f"{split}-{stage}-scored.npy", _first_scored(tok, rows, prefixes))
            longest = max(longest, rows.shape[1] if len(idx) else 0)
    meta = {"config": {"dataset": cfg.dataset, "seed": cfg.seed, "val_fraction": cfg.val_fraction},
            "documents": {"train": len(train_idx), "val": len(val_idx)}, "stages": corpus.stages + 1,
            "mask": corpus.mask, "longest_document_tokens": longest}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def open_reasoning(cfg, corpus: ReasoningCorpus, path: Path, pad: int) -> tuple[StagedBlocks, StagedBlocks]:
    """The train and validation blocks of a corpus built by `build_reasoning` in `path`.

    Raises:
        DataError: when an example (BOS, text, EOS) is longer than one block of T tokens (a greedy
            answer is decoded within one block).
    """
    longest = json.loads((path / "meta.json").read_text())["longest_document_tokens"]
    if longest > cfg.block_size:  # a greedy answer is decoded in one block of positions, EOS included
        raise DataError(f"{cfg.dataset} writes examples of up to {longest} tokens (BOS and EOS included), "
                        f"more than one block of {cfg.block_size}; raise --block-size to at least {longest} "
                        f"or lower the difficulty.")
    def stage_blocks(name: str, s: int) -> RowBlocks:
        scored = path / f"{name}-{s}-scored.npy"
        return RowBlocks(np.load(path / f"{name}-{s}.npy"), cfg.block_size, pad,
                         np.load(scored) if corpus.mask != "none" else None)

    split = {name: StagedBlocks([stage_blocks(name, s) for s in range(corpus.stages + 1)], corpus)
             for name in ("train", "val")}
    return split["train"], split["val"]
