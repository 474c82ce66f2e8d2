"""The documents of a corpus of any size, streamed: read again on every pass, never all held.

The same documents, in the same order, as `ltm.data.corpus.load_documents` gives for the same
dataset (so a streamed preparation packs the same token stream as the in-memory one): a local
file or folder is read with `datasets.load_dataset(..., streaming=True)` file by file, a `.zip`
member by member, a hub dataset with `load_dataset(name, split=split, streaming=True)`, and any
iterable of rows (mappings, e.g. a `datasets.IterableDataset` built by the caller, or strings) as
given. The first pass (`count`) checks the text field, picks each file's encoding from the list
given and counts documents; later passes (`documents(start)`) skip whole files before `start`.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ltm.core.errors import DataError
from ltm.data import corpus, embedded

_BATCH_ROWS = 1000  # rows per batch read from a `datasets` stream
_READ_BYTES = 1 << 20  # bytes of a .txt or .json(l) file read at a time
_PROGRESS_DOCS = 100_000  # show the counting pass's bar above this many documents


@dataclass
class SourceFile:
    """One local data file of a stream: its path, the encoding that reads it, its documents."""

    path: str
    encoding: str | None
    documents: int


@dataclass
class DocumentStream:
    """The non-empty text documents of `dataset`, read in a fixed order, pass after pass.

    Args:
        dataset: "embedded", a local file or folder, or a hub dataset name (ignored for `rows`).
        text_field: Column holding the text (json/parquet/csv/hub rows; `.txt` uses its text).
        split: The hub dataset's split.
        encoding: Encoding of local text files, or a comma list tried in order per file.
        max_documents: Read only the first this many documents (None for all).
        rows: An iterable of rows (mappings holding `text_field`, or strings) read instead of
            `dataset`, iterated once per pass (a `datasets.IterableDataset`, a list, ...).
    """

    dataset: str
    text_field: str = "text"
    split: str = "train"
    encoding: str = "utf-8"
    max_documents: int | None = None
    rows: Iterable | None = None
    files: list[SourceFile] = field(default_factory=list)  # filled by `count` for local data
    num_documents: int | None = None
    num_characters: int | None = None

    def count(self) -> int:
        """First pass: check the source, pick each file's encoding, count documents and characters.

        Raises:
            MissingFileError: A local path that does not exist.
            DataError: Unreadable data, a missing text field (naming the columns seen), or no text.
        """
        encodings = corpus._encodings(self.encoding)
        n = chars = 0
        with tqdm(desc="counting documents", unit="doc", unit_scale=True, disable=None, leave=False) as bar:
            def tally(docs: Iterable[str]) -> tuple[int, int]:
                k = c = 0
                for doc in itertools.islice(docs, self._room(n)):
                    k, c = k + 1, c + len(doc)
                    if k % _PROGRESS_DOCS == 0:
                        bar.update(_PROGRESS_DOCS)
                return k, c

            if self._is_local():
                self.files = []
                for path in corpus.data_files(self.dataset):
                    if self._room(n) == 0:
                        break
                    (k, c), encoding = self._count_file(path, encodings, tally)
                    self.files.append(SourceFile(str(path), encoding, k))
                    n, chars = n + k, chars + c
            else:
                n, chars = tally(self._other_documents())
        if n == 0:
            raise DataError(f"dataset {self._name()!r} has no text in field {self.text_field!r} (every row "
                            f"is empty); point text_field at the column holding the text.")
        self.num_documents, self.num_characters = n, chars
        return n

    def documents(self, start: int = 0) -> Iterator[str]:
        """The documents from index `start` on (after `count`); whole files before it are not read."""
        if self.num_documents is None:
            raise RuntimeError("count() the stream before reading it")
        if not self._is_local():
            yield from itertools.islice(self._other_documents(), start, self.num_documents)
            return
        first = 0
        for f in self.files:
            if first + f.documents > start:
                docs = self._file_documents(Path(f.path), f.encoding)
                yield from itertools.islice(docs, max(0, start - first), f.documents)
            first += f.documents

    def plan(self) -> dict:
        """What `count` found, as JSON (stored in a shard index so a resumed run skips the count)."""
        return {"documents": self.num_documents, "characters": self.num_characters,
                "files": [[f.path, f.encoding, f.documents] for f in self.files]}

    def restore(self, plan: dict) -> None:
        """Take the counts of an earlier `plan()` instead of counting again."""
        self.num_documents, self.num_characters = plan["documents"], plan["characters"]
        self.files = [SourceFile(p, e, k) for p, e, k in plan["files"]]

    # -- the kinds of source ----------------------------------------------------------------------

    def _name(self) -> str:
        return self.dataset if self.rows is None else f"{self.dataset} (rows given)"

    def _room(self, n: int) -> int | None:
        return None if self.max_documents is None else max(0, self.max_documents - n)

    def _is_local(self) -> bool:
        return self.rows is None and self.dataset != "embedded" and not corpus._is_hub_name(self.dataset)

    def _other_documents(self) -> Iterator[str]:
        """Documents of the embedded corpus, of the rows given, or of a hub dataset's stream."""
        if self.rows is not None:
            return _row_documents(self.rows, self.text_field, self._name())
        if self.dataset == "embedded":
            return iter(embedded.embedded_documents())
        return _row_documents(_hub_stream(self.dataset, self.split), self.text_field, self.dataset)

    def _count_file(self, path: Path, encodings: tuple[str, ...], tally) -> tuple[tuple, str | None]:
        """`tally` of one file's documents, and the first of `encodings` that reads it (None: a zip)."""
        if corpus._extension(path) == ".zip":
            return tally(_zip_documents(path, encodings)), None
        for i, encoding in enumerate(encodings):
            try:
                return tally(self._file_documents(path, encoding)), encoding
            except UnicodeDecodeError as bad:
                if i == len(encodings) - 1:
                    raise corpus._undecodable(f"data file {str(path)!r}", encodings, bad) from None
        raise AssertionError("no encoding given")

    def _file_documents(self, path: Path, encoding: str | None) -> Iterator[str]:
        if corpus._extension(path) == ".zip":
            yield from _zip_documents(path, corpus._encodings(self.encoding))
            return
        builder = corpus._BUILDERS[corpus._extension(path)]
        name = "text" if builder == "text" else self.text_field
        rows = _file_stream(path, builder, encoding)
        for text in _row_documents(rows, name, str(path), what=f"data file {str(path)!r}"):
            yield text.strip("\n") if builder == "text" else text


def _row_documents(rows: Iterable, text_field: str, source: str, what: str | None = None) -> Iterator[str]:
    """The non-empty strings of `text_field` in `rows` (mappings, column batches or strings)."""
    batches = rows.iter(batch_size=_BATCH_ROWS) if hasattr(rows, "iter") else None
    try:
        if batches is not None:  # a datasets stream: column batches, faster than rows
            for i, batch in enumerate(batches):
                if i == 0:
                    _check_field(batch, text_field, source)
                yield from (t for t in batch[text_field] if isinstance(t, str) and t.strip())
            return
        for i, row in enumerate(rows):
            text = row
            if isinstance(row, Mapping):
                if i == 0:
                    _check_field(row, text_field, source)
                text = row.get(text_field)
            if isinstance(text, str) and text.strip():
                yield text
    except (DataError, UnicodeDecodeError):
        raise
    except Exception as e:
        bad = corpus._decode_error(e)
        if bad is not None:
            raise bad from None
        raise DataError(f"could not read {what or f'dataset {source!r}'} ({type(e).__name__}: {e}); "
                        f"check that it is valid data of its kind.") from e


def _check_field(row: Mapping, text_field: str, source: str) -> None:
    if text_field not in row:
        raise DataError(f"dataset {source!r} has no column {text_field!r}; its columns are "
                        f"{list(row)}: set text_field to the one holding the text.")


def _file_stream(path: Path, builder: str, encoding: str | None):
    """The `datasets` stream of one local file (paragraphs of a .txt, rows otherwise)."""
    from datasets import load_dataset

    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    if corpus._extension(path) == ".tsv":
        kwargs["sep"] = "\t"
    if builder in ("text", "json", "csv"):  # parquet carries its own encoding
        kwargs["encoding"] = encoding
    if builder in ("text", "json"):  # read 1 MB at a time, not 10: the same rows, 170 MB less memory
        kwargs["chunksize"] = _READ_BYTES
    try:
        with corpus._quiet_datasets():
            return load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)
    except Exception as e:
        raise DataError(f"could not read data file {str(path)!r} with the datasets {builder!r} loader "
                        f"({type(e).__name__}: {e}); check that it is valid {builder}.") from e


def _hub_stream(name: str, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split, streaming=True)
    except Exception as e:
        raise DataError(f"dataset {name!r} is no local path and could not be streamed from the hub "
                        f"({type(e).__name__}: {e}); pass an existing local file or folder, or "
                        f"dataset='embedded'.") from e


def _zip_documents(path: Path, encodings: tuple[str, ...]) -> Iterator[str]:
    """One document per non-empty `.txt` member, members in sorted order, one at a time."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".txt"))
            if not names:
                raise DataError(f"zip archive {str(path)!r} holds no .txt files.")
            for n in names:
                text = corpus._decode(archive.read(n), encodings, f"member {n!r} of {str(path)!r}").strip()
                if text:
                    yield text
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"cannot read zip archive {str(path)!r} ({err}).") from None
