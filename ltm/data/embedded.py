"""The embedded corpus: the Python standard library's own documentation, read from its source.

Every Python install carries it, so the default run needs no download. The stdlib `.py` files are
parsed with `ast` (never imported), in sorted path order; each module gives one document made of
its module, class and function docstrings in source order. The reference manual's topics in
`pydoc_data/topics.py` (what `help("assert")` shows) give one document per topic. Test suites,
IDLE, demos and generated codecs are left out. The result is about 2 MB of English prose with
some code examples, identical across runs on the same Python version.
"""

from __future__ import annotations

import ast
import functools
import gc
import os
import sys
import sysconfig
from pathlib import Path

# Bump when the extraction changes, so cached token ids are rebuilt.
EMBEDDED_VERSION = 1
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "idlelib", "turtledemo", "lib2to3", "ensurepip",
                        "encodings", "pydoc_data", "site-packages", "dist-packages", "__pycache__"})
_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCKS = (ast.If, ast.Try, ast.ExceptHandler, ast.With)  # defs inside these still count


def stdlib_root() -> Path:
    """Folder holding the standard library's `.py` sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def fingerprint() -> dict:
    """What the embedded corpus depends on (for cache keys), without reading it."""
    return {"embedded": EMBEDDED_VERSION, "python": sys.version, "stdlib": str(stdlib_root())}


def _module_files(root: Path) -> list[Path]:
    """The stdlib's `.py` files, skipped folders pruned, sorted by relative path."""
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS]  # never descend into site-packages
        files += [Path(folder, n) for n in names if n.endswith(".py") and not n.startswith("test_")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(node: ast.AST) -> list[str]:
    """Docstrings of `node` and its nested classes/functions, depth-first in source order."""
    doc = ast.get_docstring(node, clean=True) if isinstance(node, (ast.Module, *_DEFS)) else None
    out = [doc] if doc and doc.strip() else []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (*_DEFS, *_BLOCKS)):
            out += _docstrings(child)
    return out


def _topics(root: Path) -> list[str]:
    """The reference manual's topic texts from pydoc_data/topics.py, sorted by topic name."""
    path = root / "pydoc_data" / "topics.py"
    if not path.is_file():
        return []
    for node in ast.parse(path.read_bytes()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            pairs = [(k.value, v.value) for k, v in zip(node.value.keys, node.value.values, strict=True)
                     if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)]
            return [text.strip() for _, text in sorted(pairs) if text.strip()]
    return []


@functools.lru_cache(maxsize=4)
def embedded_documents(max_modules: int | None = None) -> tuple[str, ...]:
    """The embedded corpus as documents: one per stdlib module, then one per reference topic.

    Args:
        max_modules: Read only the first this many modules (sorted by path) and no topics; for
            quick tests. None reads everything (a few seconds, cached in-process).
    """
    root = stdlib_root()
    files = _module_files(root)[:max_modules]
    docs: list[str] = []
    enabled = gc.isenabled()
    gc.disable()  # ast.parse allocates many small objects; collection would double the time
    try:
        for path in files:
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError, OSError):
                continue  # a file this interpreter cannot parse (e.g. a stray Python 2 file)
            text = "\n\n".join(_docstrings(tree))
            if text:
                docs.append(text)
        if max_modules is None:
            docs += _topics(root)
    finally:
        if enabled:
            gc.enable()
    return tuple(docs)
