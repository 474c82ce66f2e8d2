"""Each mistake of the issue's list gets one sentence that names the flag or file and the fix;
anything that is not a user's mistake keeps its traceback."""

from __future__ import annotations

import json
import logging
import math
import shutil

import pytest
import torch

from ltm.cli.errors import report_user_errors
from ltm.core.errors import ConfigError, DivergedError
from ltm.inference import InnerLoopConfig, LocalGaussianGuide
from ltm.inference.inner_loop import fit_local
from ltm.models import DecoderConfig, LatentThoughtModel
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from ltm.training import precision
from ltm.training.metrics import MetricsLog
from tests.cli_helpers import (  # noqa: F401 (fixture)
    one_thread,
    run_everything,
    shared_paths,
    shared_run,
    tiny_flags,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("flag, value", [("--lr (--slow.lr)", "inf"), ("--lr (--slow.lr)", "nan"),
                                         ("--lr (--slow.lr)", "-1"), ("--fast-lr (--inner.lr)", "inf"),
                                         ("--fast-lr (--inner.lr)", "0")])
def test_a_learning_rate_that_is_not_finite_and_positive_names_its_flag(flag, value, tmp_path,
                                                                        tmp_path_factory, capsys):
    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "run"
    assert train_main([*tiny_flags(corpus, cache, run), flag.split()[0], value]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flag} must be a finite number > 0") and line.endswith(
        f"got {float(value)}.")
    assert not run.exists()  # refused before anything was written


def test_metrics_jsonl_stays_strict_json(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": float("nan"), "lr": float("inf"), "kl_per_latent": [1.0, -math.inf]})

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    record = json.loads(log.path.read_text(), parse_constant=refuse)
    assert record == {"step": 1, "loss": None, "lr": None, "kl_per_latent": [1.0, None]}


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's warning of the NaN loss raised here
def test_a_diverged_decoder_is_blamed_on_the_slow_learning_rate():
    model = LatentThoughtModel.build(DecoderConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2,
                                                   d_model=16, n_latent=2, d_latent=4))
    with torch.no_grad():
        model.decoder.embed.weight[0, 0] = float("nan")  # what an infinite slow step leaves behind
    with pytest.raises(DivergedError, match=r"weights are no longer finite .* \(--lr\)"):
        fit_local(model, LocalGaussianGuide(), torch.randint(0, 16, (2, 9)), InnerLoopConfig(steps=2))


def test_the_newest_checkpoint_incomplete_is_said_with_the_step_used(tmp_path, tmp_path_factory, caplog,
                                                                    capsys):
    run = tmp_path / "run"
    shutil.copytree(shared_run(tmp_path_factory), run)
    (run / "step_000006" / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert sample_main(["--checkpoint", str(run), "--prompt", "the", "--max-new-tokens", "2"]) == 0
    (message,) = [r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()]
    assert f"checkpoint {run / 'step_000006'} is incomplete (manifest.json" in message
    assert "using step_000004, the latest complete one" in message


def test_only_ltm_user_errors_become_one_line(monkeypatch, capsys):
    assert report_user_errors(lambda: (_ for _ in ()).throw(ConfigError("bad value\nmore"))) == 2
    assert capsys.readouterr().err == "error: bad value\n"

    def bug():
        raise ValueError("an index went wrong deep inside")
    with pytest.raises(ValueError, match="deep inside"):  # a bug keeps its traceback
        report_user_errors(bug)
    with pytest.raises(ZeroDivisionError):
        report_user_errors(lambda: 1 / 0)


def test_a_latin1_file_names_the_encoding_and_reads_with_encoding(tmp_path, tmp_path_factory, capsys):
    _, cache = shared_paths(tmp_path_factory)
    text = "\n\n".join("Le café de la rue était fermé, déjà à midi, et la fenêtre aussi." for _ in range(300))
    data = tmp_path / "latin1.txt"
    data.write_bytes(text.encode("latin-1"))
    flags = tiny_flags(data, cache, tmp_path / "run", max_steps=2, save_every=2)
    assert train_main(flags) == 2
    line = one_line(capsys.readouterr().err)
    assert "is not valid utf-8 text" in line and "--encoding latin-1" in line
    assert train_main([*flags, "--encoding", "latin-1"]) == 0


def test_the_ltm_with_a_delta_prior_end_to_end(tmp_path, tmp_path_factory, capsys):
    """The fixed-latent control: train, resume, sample and evaluate; the KL is 0 and the latent
    diagnostics are skipped with their reason recorded."""
    report = run_everything(["--prior", "delta", "--guide", "prior"], tmp_path, tmp_path_factory, capsys)
    assert report["diagnostics_skipped"].startswith("the prior is a point mass")
    assert all(r["fresh_noise_elbo"]["kl"] == 0.0 for r in report["results"])
    val = [json.loads(line) for line in (report["run"] / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    assert val and all(r["kl"] == 0.0 and "point mass" in r["diagnostics_skipped"] for r in val)


def test_auto_precision_can_be_forced_either_way(monkeypatch):
    cpu = torch.device("cpu")
    for forced in ("fp32", "bf16"):
        monkeypatch.setenv(precision.AUTO_PRECISION_ENV, forced)
        assert precision.resolve_precision("auto", cpu) == forced
    monkeypatch.setenv(precision.AUTO_PRECISION_ENV, "fp16")
    with pytest.raises(ConfigError, match="LTM_AUTO_PRECISION='fp16' must be fp32 or bf16"):
        precision.resolve_precision("auto", cpu)


def test_a_diverged_posterior_under_pyros_checks_is_blamed_on_the_fast_learning_rate():
    """With Pyro's argument checks on (as in the tests), a NaN mean is refused while q is built,
    before any loss exists: it is named as a divergence, not a raw ValueError."""
    from ltm.inference.guides.gaussian import LocalGaussianGuide as Gaussian

    class Diverged(Gaussian):
        def init_locals(self, prior, tokens, start):
            found = super().init_locals(prior, tokens, start)
            found["loc"][0, 0, 0] = float("nan")
            return found

    model = LatentThoughtModel.build(DecoderConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2,
                                                   d_model=16, n_latent=2, d_latent=4))
    with pytest.raises(DivergedError, match=r"lower the fast learning rate \(--fast-lr"):
        fit_local(model, Diverged(), torch.randint(0, 16, (2, 9)), InnerLoopConfig(steps=2))


def test_an_alias_and_its_section_given_twice_differently_are_refused(tmp_path):
    from ltm.training.config import TrainConfig, load_config_file

    path = tmp_path / "c.yaml"
    path.write_text("inner_steps: 8\ninner: {steps: 4}\n")
    with pytest.raises(ConfigError, match=r"gives inner.steps twice, as 8 and as 4"):
        load_config_file(path)
    path.write_text("inner_steps: 4\ninner: {steps: 4}\nearly_inner_steps: -3\n")  # the same: fine
    with pytest.raises(ConfigError, match=r"--early-inner-steps \(--early.steps\) must be a whole number"):
        TrainConfig.from_dict(load_config_file(path))
