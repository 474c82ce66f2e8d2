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


def test_setup_commands_are_what_ci_runs():
    setup = re.search(r"## Set up and run.*?```bash\n(.*?)```", README, flags=re.S).group(1).splitlines()
    install, test = setup
    assert install == 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m ltm.train'
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test == "HF_HUB_OFFLINE=1 python -m pytest -q" and test in ci  # the very line, run as is
    assert "python -m pip install --quiet torch==2.13.0" in ci  # the pin before anything pulls torch


def test_slow_marker_selects_tests():
    """The README's `-m slow` selects something: some test carries the marker the default run skips."""
    import ast

    assert "-m slow" in README and "-m 'not slow'" in (REPO / "pyproject.toml").read_text()
    marked = [f"{path.name}::{node.name}" for path in sorted((REPO / "tests").rglob("test_*.py"))
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.FunctionDef)
              and any(ast.unparse(d) == "pytest.mark.slow" for d in node.decorator_list)]
    assert marked, "no test is marked slow"


def test_every_file_the_readme_names_exists():
    """Configs, result tables and plots the README points at are in the repository."""
    pattern = r"\b((?:configs|results|bench|notebooks)/[\w./-]+\.(?:yaml|md|png|py|ipynb))"
    named = set(re.findall(pattern, README))
    assert any(p.startswith("results/") for p in named), "the README quotes no committed result"
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"the README names files that are not in the repository: {missing}"


def test_every_training_command_parses():
    """Each `python -m ltm.train ...` the README shows names real flags with valid values (checked
    as the tool checks them, without training; a --config that the command itself writes first is
    left out)."""
    import shlex

    from ltm.cli.train_args import build_parser, given_values
    from ltm.training.config import TrainConfig

    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    commands = [" ".join(c.split()) for b in blocks for c in b.replace("\\\n", " ").splitlines()
                if c.strip().startswith("python -m ltm.train ") and "--help" not in c]
    assert len(commands) >= 10 and any("--init-from-hf" in c for c in commands)
    for command in commands:
        argv = shlex.split(command.split("#")[0])[3:]
        if "--config" in argv and not (REPO / argv[argv.index("--config") + 1]).exists():
            i = argv.index("--config")
            argv = argv[:i] + argv[i + 2:]
        args = build_parser("", argv).parse_args(argv)
        given = given_values(args)
        given.pop("config", None)
        TrainConfig.from_dict(given)
