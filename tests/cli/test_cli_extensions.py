"""What a user adds without touching ltm: a prior and a model family defined here, in a test file,
named on the command line as `module:Class`, go through train, resume, sample and evaluate."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ltm.models import DecodeState
from ltm.ponder.token_level import TokenLevelFamily
from ltm.priors import Prior
from ltm.training.checkpoint import load_checkpoint
from tests.cli_helpers import one_thread, run_everything, shared_paths, tiny_flags  # noqa: F401 (fixture)

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


@pytest.mark.parametrize("prior, guide", [("mixture", "delta"),
                                          (f"{__name__}:LaplacePrior", "gaussian"),
                                          (f"{__name__}:LaplacePrior", "delta")])
def test_priors_and_guides_end_to_end(prior, guide, tmp_path, tmp_path_factory, capsys):
    flags = ["--prior", prior, "--guide", guide, "--prior-kwargs",
             '{"num_components": 3}' if prior == "mixture" else '{"init_scale": 0.5}']
    report = run_everything(flags, tmp_path, tmp_path_factory, capsys)
    model = load_checkpoint(report["run"], trust_code=prior != "mixture")[0]
    assert type(model.prior).__name__ == ("MixtureOfGaussians" if prior == "mixture" else "LaplacePrior")
    assert report["exact"] is False
    every = ["elbo", "iwae", "prefix", "published"]
    assert report["protocols"] == (["prefix"] if guide == "delta" else every)  # delta: no density


def test_a_family_defined_outside_ltm_end_to_end(tmp_path, tmp_path_factory, capsys):
    flags = ["--model", f"{__name__}:ToyFamily", "--toy.init-temperature", "2.0"]
    report = run_everything(flags, tmp_path, tmp_path_factory, capsys)
    model, _, config = load_checkpoint(report["run"], trust_code=True)
    assert isinstance(model, ToyFamily) and config.options == ToyOptions(init_temperature=2.0)
    assert report["exact"] is True  # its NLL is exact: one heading
    records = [json.loads(line) for line in (report["run"] / "metrics.jsonl").read_text().splitlines()]
    temperatures = [r["temperature"] for r in records if r["split"] == "train"]
    assert len(temperatures) == 4 and temperatures[0] != pytest.approx(2.0, abs=1e-6)  # logged, and learned
    config_text = (report["run"] / "step_000004" / "config.json").read_text()
    assert json.loads(config_text)["toy"] == {"init_temperature": 2.0}
