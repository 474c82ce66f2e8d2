"""The installed names: the folders inference/ and priors/ install as ltm.inference and ltm.priors,
claim no generic top-level name, and no module can be imported under two names."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO

PROBE = """
import importlib.util, json, sys
found = {}
for name in ("inference", "priors"):
    spec = importlib.util.find_spec(name)
    found[name] = None if spec is None else (spec.origin or str(spec.submodule_search_locations))
import ltm.inference, ltm.priors
found["ltm.inference"] = ltm.inference.__file__
print(json.dumps(found))
"""


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_outside_the_checkout_inference_is_not_this_project(tmp_path):
    import json

    proc = _python(PROBE, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout)
    for name in ("inference", "priors"):  # absent, or another package's: never this repository's
        assert found[name] is None or str(REPO) not in found[name], found
    assert found["ltm.inference"] == str(REPO / "inference" / "__init__.py")


def test_inside_the_checkout_the_bare_name_is_refused():
    for name in ("inference", "priors.base"):
        proc = _python(f"import {name}", REPO)  # the repository root is on sys.path here
        assert proc.returncode == 1
        assert f"import it as ltm.{name.split('.')[0]}, not as '{name.split('.')[0]}'" in proc.stderr


def test_every_package_folder_is_installed():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"ltm": "ltm", "ltm.inference": "inference", "ltm.priors": "priors"}
    assert setuptools["package-dir"] == folders
    found = set()
    for package, folder in folders.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([package, *parts]))
    assert set(setuptools["packages"]) == found
