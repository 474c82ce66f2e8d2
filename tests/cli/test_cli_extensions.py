"""What a user adds without touching ltm: a prior and a model family defined here, in a test file,
named on the command line as `module:Class`, go through train, resume, sample and evaluate."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pyro.distributions as dist
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ltm.evaluate import main as evaluate_main
from ltm.models import DecodeState
from ltm.ponder.token_level import TokenLevelFamily
from ltm.priors import Prior
from ltm.sample import main as sample_main
from ltm.train import main as train_main
from ltm.training.checkpoint import load_checkpoint
from tests.cli_helpers import one_thread, shared_paths, tiny_flags, train_losses  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


class LaplacePrior(Prior):
    """p(z) = Laplace(0, scale) per coordinate, the scale learned: a prior ltm does not ship."""

    def __init__(self, num_latents: int, latent_dim: int, init_scale: float = 1.0):
        super().__init__(num_latents, latent_dim)
        self.register_buffer("zeros", torch.zeros(num_latents, latent_dim))  # (N, D)
        self.log_scale = nn.Parameter(torch.full((num_latents, latent_dim), math.log(init_scale)))

    def forward(self, context=None):
        return dist.Laplace(self.zeros, self.log_scale.exp()).to_event(2)


@dataclass
class ToyOptions:
    """The `toy` config section.

    Attributes:
        init_temperature: Starting temperature the logits are divided by (learned).
    """

    init_temperature: float = 1.0


class ToyFamily(TokenLevelFamily):
    """A family ltm does not ship: the vanilla decoder with a learned output temperature."""

    name = "toy"
    Options = ToyOptions

    def __init__(self, decoder, init_temperature: float = 1.0):
        super().__init__(decoder)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))

    def _scale(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.log_temperature.exp()

    def train_logits(self, inputs):
        return self._scale(self.decoder(inputs)), None  # (B, T, V)

    def exact_logits(self, tokens):
        return self._scale(self.decoder(tokens))  # (B, T, V)

    @torch.no_grad()
    def start_decode(self, tokens, max_len=None):
        cache = self.decoder.new_cache(tokens.shape[0], max_len)
        return self._scale(self.decoder(tokens, cache=cache)[:, -1]), DecodeState(cache, tokens.shape[1])

    @torch.no_grad()
    def decode_step(self, token, state):
        logits = self._scale(self.decoder(token[:, None], cache=state.cache)[:, -1])  # (B, V)
        state.position += 1
        return logits, state

    def metrics(self):
        return {"temperature": float(self.log_temperature.detach().exp())}


def _run_everything(flags: list[str], tmp_path, tmp_path_factory, capsys) -> dict:
    """Train 4 steps straight and 2 + 2 with a resume; sample twice; evaluate. Returns the report."""
    corpus, cache = shared_paths(tmp_path_factory)
    common = dict(max_steps=4, save_every=2, eval_every=2, lr_decay_steps=4)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main([*tiny_flags(corpus, cache, straight, **common), *flags]) == 0
    assert train_main([*tiny_flags(corpus, cache, split, **{**common, "max_steps": 2}), *flags]) == 0
    assert train_main(["--out-dir", str(split), "--resume", "auto", "--max-steps", "4", "--no-progress"]) == 0
    a, b = train_losses(straight), train_losses(split)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-6  # resumed == straight
    wa, wb = (load_file(run / "step_000004/model.safetensors") for run in (straight, split))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    capsys.readouterr()
    args = ["--checkpoint", str(split), "--prompt", "the cat sat", "--max-new-tokens", "5", "--seed", "3"]
    assert sample_main(args) == 0
    first = capsys.readouterr().out
    assert "the cat sat" in first
    assert sample_main(args) == 0 and capsys.readouterr().out == first
    out = tmp_path / "eval.json"
    assert evaluate_main(["--checkpoint", str(split), "--inner-steps", "0,2", "--batches", "1",
                          "--iwae-samples", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    if report["exact"]:  # one heading: the exact NLL, no budget K
        assert report["results"] == [] and math.isfinite(report["exact_nll"]["nll"])
        return report | {"run": split}
    assert [r["inner_steps"] for r in report["results"]] == [0, 2]
    for r in report["results"]:  # a guide without a density (delta) gets prefix-predictive only
        assert "prefix_predictive" in r
        assert all(math.isfinite(v) for k in ("fresh_noise_elbo", "importance_weighted", "prefix_predictive")
                   if k in r for v in r[k].values() if isinstance(v, float))
    return report | {"run": split}


@pytest.mark.parametrize("prior, guide", [("mixture", "delta"),
                                          (f"{__name__}:LaplacePrior", "gaussian"),
                                          (f"{__name__}:LaplacePrior", "delta")])
def test_priors_and_guides_end_to_end(prior, guide, tmp_path, tmp_path_factory, capsys):
    flags = ["--prior", prior, "--guide", guide, "--prior-kwargs",
             '{"num_components": 3}' if prior == "mixture" else '{"init_scale": 0.5}']
    report = _run_everything(flags, tmp_path, tmp_path_factory, capsys)
    model = load_checkpoint(report["run"])[0]
    assert type(model.prior).__name__ == ("MixtureOfGaussians" if prior == "mixture" else "LaplacePrior")
    assert report["exact"] is False
    every = ["elbo", "iwae", "prefix", "published"]
    assert report["protocols"] == (["prefix"] if guide == "delta" else every)  # delta: no density


def test_a_family_defined_outside_ltm_end_to_end(tmp_path, tmp_path_factory, capsys):
    flags = ["--model", f"{__name__}:ToyFamily", "--toy.init-temperature", "2.0"]
    report = _run_everything(flags, tmp_path, tmp_path_factory, capsys)
    model, _, config = load_checkpoint(report["run"])
    assert isinstance(model, ToyFamily) and config.options == ToyOptions(init_temperature=2.0)
    assert report["exact"] is True  # its NLL is exact: one heading
    records = [json.loads(line) for line in (report["run"] / "metrics.jsonl").read_text().splitlines()]
    temperatures = [r["temperature"] for r in records if r["split"] == "train"]
    assert len(temperatures) == 4 and temperatures[0] != pytest.approx(2.0, abs=1e-6)  # logged, and learned
    config_text = (report["run"] / "step_000004" / "config.json").read_text()
    assert json.loads(config_text)["toy"] == {"init_temperature": 2.0}
