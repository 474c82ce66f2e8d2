"""Imports flow one way, from the bottom layer up to the command-line tools, with no loop anywhere.

Every import of every module is read from its source (late imports inside functions included), so
an upward import cannot hide; and every module is imported first, alone, in a fresh interpreter
state of ltm, so a loop that only shows in one import order cannot hide either.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"ltm": "ltm", "inference": "ltm.inference", "priors": "ltm.priors"}  # folder -> package

# Bottom to top. A module may import its own package and anything in a lower layer, nothing else.
LAYERS = [
    ["ltm.core"],
    ["ltm.data"],
    ["ltm.priors"],
    ["ltm.inference"],
    ["ltm.models"],
    ["ltm.ponder"],
    ["ltm.families"],
    ["ltm.training"],
    ["ltm.sampling"],
    ["ltm.eval"],
    ["ltm.cli"],
    ["ltm.train", "ltm.sample", "ltm.evaluate", "ltm.compare", "ltm.export", "ltm.prepare"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
FAMILY_FILES = ("ltm/ponder/", "ltm/models/latent_thought.py", "ltm/models/family.py")


def modules() -> dict[str, Path]:
    """Every module of the distribution by its installed name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def unit_of(module: str) -> str | None:
    """The layer unit a module belongs to: the longest listed prefix ("ltm" itself belongs to none)."""
    best = None
    for unit in RANK:
        if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best)):
            best = unit
    return best


def imported_modules(path: Path, module: str) -> set[str]:
    """Every ltm module `path` imports, at any depth of the file, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from ..y import z
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + [base]).strip(".")
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in out if m in known}


def test_every_module_sits_in_a_layer():
    orphans = [m for m in modules() if m != "ltm" and unit_of(m) is None]
    assert not orphans, f"modules outside every layer of LAYERS: {orphans}"


def test_imports_flow_one_way():
    upward = []
    for module, path in modules().items():
        if module == "ltm":
            continue  # the package's face: lazy exports only (checked below)
        rank, unit = RANK[unit_of(module)], unit_of(module)
        for target in imported_modules(path, module):
            if target == "ltm":
                upward.append(f"{module} imports the top package ltm; import the module itself")
                continue
            t_unit = unit_of(target)
            if t_unit != unit and RANK[t_unit] >= rank:
                upward.append(f"{module} ({unit}) imports {target} ({t_unit})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_loop_between_modules():
    known = modules()
    graph = {m: imported_modules(p, m) - {m} for m, p in known.items()}
    for parent in known:  # importing a module runs its parents' __init__ first
        for child in known:
            if child.startswith(parent + ".") and child in graph[parent]:
                graph[parent].discard(child)  # a package face importing its own children is no loop
    index, low, stack, on_stack, loops, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not loops, f"import loops: {loops}"


def test_the_top_package_imports_nothing_eagerly():
    assert imported_modules(REPO / "ltm" / "__init__.py", "ltm") == set()


def test_no_family_name_or_hasattr_branch_outside_the_families():
    """Only a family's own file may name a family, branch on `config.model`, or probe a model with
    hasattr/getattr: everything else goes through the `Family` interface."""
    from ltm.families import FAMILIES

    def model_like(node) -> bool:
        text = ast.unparse(node)
        return text.split(".")[-1] in ("model", "family", "fam", "ltm")

    offenders = []
    for module, path in modules().items():
        rel = str(path.relative_to(REPO))
        if rel.startswith(FAMILY_FILES) or module == "ltm.families":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr") \
                    and node.args and model_like(node.args[0]):
                offenders.append(f"{where} probes a model: {ast.unparse(node)}")
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(c, ast.Constant) and c.value in FAMILIES for c in operands):
                    offenders.append(f"{where} compares with a family name: {ast.unparse(node)}")
                if any(isinstance(c, ast.Attribute) and c.attr == "model" for c in operands):
                    offenders.append(f"{where} branches on the model's name: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("module", sorted(m for m in modules() if m != "ltm.eval.lm_eval_adapter"))
def test_every_module_imports_alone(module):
    saved = {name: mod for name, mod in sys.modules.items() if name == "ltm" or name.startswith("ltm.")}
    for name in saved:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    finally:
        for name in [n for n in sys.modules if n == "ltm" or n.startswith("ltm.")]:
            del sys.modules[name]
        sys.modules.update(saved)
