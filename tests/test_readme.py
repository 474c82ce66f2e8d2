"""The README's promises: its Python example runs, and its set-up commands are the ones CI runs."""

from __future__ import annotations

import re

import pytest

from tests.cli_helpers import REPO, one_thread  # noqa: F401 (fixture)

README = (REPO / "README.md").read_text()


@pytest.mark.usefixtures("one_thread")
def test_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert "nats/token" in capsys.readouterr().out


def test_setup_commands():
    assert 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m ltm.train' in README
    assert "HF_HUB_OFFLINE=1 python -m pytest -q" in README
    assert "python -m pytest -q" in (REPO / ".ci" / "run").read_text()
