"""Readers of the zero-shot evaluation sets from local files (plain text, jsonl, optionally gzipped).

- WikiText-2 (`wiki.*.tokens`, tokenized release): one document per article (split at the
  top-level ` = Title = ` headings).
- PTB (Mikolov `ptb.*.txt`): one document per sentence line.
- LAMBADA (OpenAI `lambada_test.jsonl`): `{"text": ...}` per line; the target is the last
  whitespace-separated word, the context the text before it.
- BLiMP (`<paradigm>.jsonl[.gz]`, a file or a folder of them): `sentence_good`, `sentence_bad`
  and `UID` (the paradigm) per line.

Every reader raises FileNotFoundError for a missing path and ValueError, in one sentence naming the
file, for an empty file or one in another format.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from ltm.core.errors import DataError, MissingFileError

_HEADING = re.compile(r"^ ?= [^=].* = ?$")  # a WikiText article title line


def read_text(path: str | Path, what: str) -> str:
    """The text of a (possibly gzipped) UTF-8 file, checked to exist and hold something."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} file {str(path)!r} does not exist; pass the path to it.")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(f"{what} file {str(path)!r} is not UTF-8 text ({type(err).__name__}).") from None
    if not text.strip():
        raise DataError(f"{what} file {str(path)!r} is empty.")
    return text


def wikitext_documents(path: str | Path) -> list[str]:
    """WikiText articles (lines joined, stripped), in file order."""
    docs, current = [], []
    for line in read_text(path, "WikiText").splitlines():
        if _HEADING.match(line) and current:
            docs.append(current)
            current = []
        if line.strip():
            current.append(line.strip())
    docs.append(current)
    return [" ".join(d) for d in docs if d]


def line_documents(path: str | Path, what: str = "PTB") -> list[str]:
    """One document per non-empty line (PTB sentences)."""
    return [line.strip() for line in read_text(path, what).splitlines() if line.strip()]


def _jsonl(path: Path, what: str, fields: tuple[str, ...], expect: str) -> list[dict]:
    rows = []
    for i, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{what} file {str(path)!r} is not JSON lines (line {i} does not parse); "
                            f"expected {expect}.") from None
        if not isinstance(row, dict) or any(not isinstance(row.get(f), str) for f in fields):
            raise DataError(f"{what} file {str(path)!r} line {i} lacks the string field(s) "
                            f"{', '.join(fields)}; expected {expect}.")
        rows.append(row)
    return rows


def lambada_examples(path: str | Path) -> list[tuple[str, str]]:
    """(context, target word) per LAMBADA passage; the continuation to score is " " + word."""
    out = []
    for row in _jsonl(Path(path), "LAMBADA", ("text",), 'one {"text": ...} object per line'):
        context, _, word = row["text"].strip().rpartition(" ")
        if context and word:
            out.append((context, word))
    if not out:
        raise DataError(f"LAMBADA file {str(path)!r} holds no passage with a last word.")
    return out


def blimp_files(path: str | Path) -> list[Path]:
    """The BLiMP paradigm files a file or folder names, sorted."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"BLiMP path {str(path)!r} does not exist; pass a <paradigm>.jsonl(.gz) "
                               f"file or a folder of them.")
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    if not files:
        raise DataError(f"BLiMP folder {str(path)!r} holds no .jsonl or .jsonl.gz files.")
    return files


def blimp_pairs(path: str | Path) -> list[tuple[str, str, str]]:
    """(good sentence, bad sentence, paradigm) per line of one BLiMP file."""
    expect = "BLiMP lines with sentence_good and sentence_bad"
    rows = _jsonl(Path(path), "BLiMP", ("sentence_good", "sentence_bad"), expect)
    stem = Path(path).name.split(".")[0]
    return [(r["sentence_good"], r["sentence_bad"], str(r.get("UID", stem))) for r in rows]
