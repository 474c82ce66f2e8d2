"""Loading a checkpoint never runs code its loader did not choose (issue: a config.json naming
`os:system` ran a shell command under sample, evaluate and resume)."""

from __future__ import annotations

import pytest

from ltm.core.errors import UntrustedCodeError
from ltm.evaluate import main as evaluate_main
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from ltm.training.checkpoint import load_checkpoint, load_guide
from tests.cli_helpers import one_thread, shared_paths, shared_run, tiny_flags  # noqa: F401 (fixture)
from tests.reliability.helpers import tamper

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def planted(tmp_path, tmp_path_factory):
    """(tampered run whose guide is `os:system` with a shell command, the file it would create)."""
    marker = tmp_path / "code-ran"
    run = tamper(shared_run(tmp_path_factory), tmp_path / "shared-run", guide="os:system",
                 guide_kwargs={"command": f"touch {marker}"})
    return run, marker


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


TOOLS = {
    "sample": lambda run: sample_main(["--checkpoint", str(run), "--prompt", "the cat",
                                       "--max-new-tokens", "2"]),
    "sample unconditional": lambda run: sample_main(["--checkpoint", str(run), "--unconditional",
                                                     "--max-new-tokens", "2"]),
    "evaluate": lambda run: evaluate_main(["--checkpoint", str(run), "--batches", "1",
                                           "--inner-steps", "0"]),
    "resume": lambda run: train_main(["--out-dir", str(run), "--resume", "auto", "--max-steps", "8",
                                      "--no-progress"]),
}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_checkpoint_naming_os_system_runs_nothing(tool, planted, capsys):
    run, marker = planted
    assert TOOLS[tool](run) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "names code for its guide, 'os:system'" in line and "--trust-code" in line
    assert not marker.exists()


def test_from_python_and_for_the_harness_too(planted):
    run, marker = planted
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        load_checkpoint(run)
    with pytest.raises(UntrustedCodeError):
        load_guide(run)
    lm_eval = pytest.importorskip("ltm.eval.lm_eval_adapter")
    with pytest.raises(UntrustedCodeError):
        lm_eval.LTMHarnessModel(pretrained=str(run))
    assert not marker.exists()


def test_trusting_the_checkpoint_still_calls_nothing_that_is_not_a_guide(planted, capsys):
    """--trust-code imports the module, but `os.system` is no LocalGuide subclass: it is refused
    before anything calls it."""
    run, marker = planted
    assert sample_main(["--checkpoint", str(run), "--prompt", "the", "--trust-code"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "guide 'os:system' is a builtin_function_or_method, not a subclass of" in line
    assert not marker.exists()


def test_a_module_planted_in_the_working_directory_is_not_imported(tmp_path, tmp_path_factory,
                                                                    monkeypatch, capsys):
    marker = tmp_path / "imported"
    (tmp_path / "evil_guide.py").write_text(f"open({str(marker)!r}, 'w').close()\nGuide = object\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` puts the working directory first
    run = tamper(shared_run(tmp_path_factory), tmp_path / "run", guide="evil_guide:Guide")
    for tool in TOOLS.values():
        assert tool(run) == 2
        assert "'evil_guide:Guide'" in one_error_line(capsys.readouterr().err)
    assert not marker.exists()


def test_init_from_takes_weights_only_and_imports_nothing(planted, tmp_path, tmp_path_factory):
    run, marker = planted
    corpus, cache = shared_paths(tmp_path_factory)
    flags = tiny_flags(corpus, cache, tmp_path / "fine-tuned", max_steps=2, save_every=2)
    assert train_main([*flags, "--init-from", str(run)]) == 0
    assert not marker.exists()


def test_a_path_given_on_the_command_line_is_the_users_choice(tmp_path, tmp_path_factory):
    """The user's own `module:Class` guide: a resume that names it again needs no --trust-code."""
    corpus, cache = shared_paths(tmp_path_factory)
    spec = "ltm.inference.guides.gaussian:LocalGaussianGuide"
    run = tmp_path / "own"
    assert train_main([*tiny_flags(corpus, cache, run, max_steps=2, save_every=2), "--guide", spec]) == 0
    resume = ["--out-dir", str(run), "--resume", "auto", "--max-steps", "3", "--no-progress"]
    assert train_main(resume) == 2  # the checkpoint alone does not get to import it
    assert train_main([*resume, "--guide", spec]) == 0
    assert train_main([*resume, "--max-steps", "4", "--trust-code"]) == 0
    assert type(load_checkpoint(run, trust_code=[spec])[0]).__name__ == "LatentThoughtModel"
