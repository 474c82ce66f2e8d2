"""Text documents from the embedded corpus, local files, or a hub dataset, via `datasets`.

A `.txt` file gives one document per paragraph (text between blank lines); a `.jsonl`/`.json`,
`.parquet` or `.csv`/`.tsv` file gives one document per row, read from the `text_field` column.
Each may be compressed (`.gz`, `.bz2`, `.xz`, `.zst`). A `.zip` archive gives one document per
`.txt` member (a file is a document there: e.g. one address of NLTK's State of the Union corpus),
members in sorted order. A folder is read recursively, files in sorted order, ignoring files of
other kinds (README.md, SOURCE.md). Hub names go to `datasets.load_dataset(name, split="train")`
and need a reachable hub.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import zipfile
from pathlib import Path

from ltm.core.errors import ConfigError, DataError, MissingFileError
from ltm.data import embedded, reasoning

_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet",
             ".csv": "csv", ".tsv": "csv", ".zip": "zip"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_KINDS = ".txt, .jsonl, .json, .parquet, .csv or .tsv (optionally .gz), or .zip of .txt files"


def _extension(path: Path) -> str:
    """The data extension, under any compression suffix: 'a.jsonl.gz' -> '.jsonl'."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _is_hub_name(name: str) -> bool:
    """True for 'name' or 'org/name' that is not a local path and has no file extension."""
    path = Path(name).expanduser()
    return not (path.exists() or name.startswith((".", "/", "~", "\\")) or name.count("/") > 1
                or os.sep != "/" and os.sep in name or path.suffix.lower() in (*_BUILDERS, *_COMPRESSIONS))


def data_files(dataset: str) -> list[Path]:
    """The files `dataset` names (a file, or a folder's data files), sorted.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: An unknown extension, an empty folder, or an empty file.
    """
    path = Path(dataset).expanduser()
    if not path.exists():
        raise MissingFileError(f"data path {dataset!r} does not exist; pass an existing file or folder "
                               f"({_KINDS}), or dataset='embedded' for the built-in corpus.")
    if path.is_file():
        if _extension(path) not in _BUILDERS:
            raise DataError(f"cannot read data file {dataset!r}: unknown extension "
                            f"{''.join(path.suffixes)!r}; use {_KINDS}.")
        files = [path]
    else:
        files = sorted((p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and _extension(p) in _BUILDERS), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise DataError(f"data folder {dataset!r} holds no data files; put {_KINDS} files in it.")
    empty = [str(p) for p in files if p.stat().st_size == 0]
    if empty:
        raise DataError(f"data file {empty[0]!r} is empty; remove it or fill it with text.")
    return files


def fingerprint(dataset: str) -> dict:
    """What the documents depend on, for cache keys: file paths, sizes and mtimes (not contents)."""
    if dataset == "embedded":
        return embedded.fingerprint()
    if reasoning.is_reasoning_spec(dataset):
        return {"reasoning": dataset, "generator": reasoning.GENERATOR_VERSION}
    if _is_hub_name(dataset):
        return {"hub": dataset}
    files = data_files(dataset)
    return {"files": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def _column(ds, text_field: str, source: str) -> list[str]:
    if text_field not in ds.column_names:
        raise DataError(f"dataset {source!r} has no column {text_field!r}; its columns are "
                        f"{ds.column_names}: set text_field to the one holding the text.")
    return [t for t in ds[text_field] if isinstance(t, str) and t.strip()]


@contextlib.contextmanager
def _quiet_datasets():
    """Without `datasets`' own progress bars ("Generating train split"): a local file loads in
    seconds, and ltm's tokenizing bar (shown for large corpora) says what is happening."""
    import datasets

    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def _decode_error(err: BaseException) -> UnicodeDecodeError | None:
    """The UnicodeDecodeError behind `err` (datasets wraps it in its own errors), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UnicodeDecodeError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _undecodable(what: str, encodings: tuple[str, ...], bad: UnicodeDecodeError) -> DataError:
    tried = " nor ".join(encodings)
    return DataError(f"{what} is not valid {tried} text (byte {bad.object[bad.start:bad.start + 1]!r} at "
                     f"offset {bad.start}); name its encoding with --encoding, e.g. --encoding latin-1 "
                     f"(or a list tried in order, e.g. utf-8,latin-1).")


def _decode(raw: bytes, encodings: tuple[str, ...], what: str) -> str:
    """`raw` decoded with the first of `encodings` that reads it."""
    for i, encoding in enumerate(encodings):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as bad:
            if i == len(encodings) - 1:
                raise _undecodable(what, encodings, bad) from None
    raise AssertionError("no encoding given")


def _load_zip(path: Path, encodings: tuple[str, ...]) -> list[str]:
    """One document per non-empty `.txt` member of the archive, members in sorted order."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".txt"))
            texts = [_decode(archive.read(n), encodings, f"member {n!r} of {str(path)!r}") for n in names]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"cannot read zip archive {str(path)!r} ({err}).") from None
    if not names:
        raise DataError(f"zip archive {str(path)!r} holds no .txt files.")
    return [text.strip() for text in texts if text.strip()]


def _load_file(path: Path, text_field: str, cache_dir: Path, encodings: tuple[str, ...]) -> list[str]:
    builder = _BUILDERS[_extension(path)]
    if builder == "zip":
        return _load_zip(path, encodings)
    for i, encoding in enumerate(encodings):
        try:
            ds = _load_with_datasets(path, builder, cache_dir, encoding)
            break
        except UnicodeDecodeError as bad:
            if i == len(encodings) - 1:
                raise _undecodable(f"data file {str(path)!r}", encodings, bad) from None
    if builder == "text":
        return [t.strip("\n") for t in _column(ds, "text", str(path))]
    return _column(ds, text_field, str(path))


def _load_with_datasets(path: Path, builder: str, cache_dir: Path, encoding: str):
    """The `datasets` table of one local file.

    Raises:
        UnicodeDecodeError: the text is not in `encoding`.
        DataError: any other reason the loader gives.
    """
    from datasets import load_dataset

    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    if _extension(path) == ".tsv":
        kwargs["sep"] = "\t"
    if builder in ("text", "json", "csv"):  # parquet carries its own encoding
        kwargs["encoding"] = encoding
    try:
        with _quiet_datasets():
            return load_dataset(builder, data_files=[str(path)], split="train", cache_dir=str(cache_dir),
                                **kwargs)
    except Exception as e:
        bad = _decode_error(e)
        if bad is not None:
            raise bad from None
        raise DataError(f"could not read data file {str(path)!r} with the datasets {builder!r} loader "
                        f"({type(e).__name__}: {e}); check that it is valid {builder}.") from e


def _load_hub(name: str, text_field: str, cache_dir: Path) -> list[str]:
    from datasets import load_dataset

    try:
        ds = load_dataset(name, split="train", cache_dir=str(cache_dir))
    except Exception as e:
        raise DataError(f"dataset {name!r} is no local path and could not be loaded from the hub "
                        f"({type(e).__name__}: {e}); pass an existing local file or folder, or "
                        f"dataset='embedded'.") from e
    return _column(ds, text_field, name)


def _encodings(encoding: str) -> tuple[str, ...]:
    """The encodings of a comma list, each checked to be one Python knows."""
    names = tuple(e.strip() for e in encoding.split(",") if e.strip())
    for name in names or (encoding,):
        try:
            codecs.lookup(name)
        except LookupError:
            raise ConfigError(f"--encoding {name!r} is not a text encoding Python knows; use e.g. "
                              f"utf-8, latin-1 or cp1252.") from None
    return names


def load_documents(dataset: str, text_field: str, cache_dir: str | Path,
                   encoding: str = "utf-8") -> list[str]:
    """Non-empty text documents of `dataset`, in a deterministic order.

    Args:
        dataset: "embedded", a local file or folder, or a hub dataset name (a reasoning task is
            rendered one example per block by `ltm.data.reasoning_data`, not read here).
        text_field: Column holding the text (json/parquet/csv; `.txt` files always use their text).
        cache_dir: Where `datasets` may keep its Arrow cache.
        encoding: The text encoding of local .txt, .json(l) and .csv files and of .txt members
            of .zip archives (any name Python's codecs know: "utf-8", "latin-1", "cp1252", ...), or
            a comma list tried in order for each file ("utf-8,latin-1" for a corpus that mixes).

    Raises:
        MissingFileError: A local path that does not exist.
        DataError: Unreadable data (text not in `encoding`), a missing column, or no text at all.
    """
    encodings = _encodings(encoding)
    if dataset == "embedded":
        return list(embedded.embedded_documents())
    cache_dir = Path(cache_dir)
    if _is_hub_name(dataset):
        docs = _load_hub(dataset, text_field, cache_dir)
    else:
        docs = [d for p in data_files(dataset) for d in _load_file(p, text_field, cache_dir, encodings)]
    if not docs:
        raise DataError(f"dataset {dataset!r} has no text in field {text_field!r} (every row is empty); "
                        f"point text_field at the column holding the text.")
    return docs
