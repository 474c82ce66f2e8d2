"""More inner steps fit a better local posterior: the per-sequence ELBO improves with K."""

from __future__ import annotations

import torch

from ltm.inference import InnerLoopConfig, LatentELBO, fit_local
from ltm.inference.guides.base import pyro_guide


def test_elbo_improves_as_inner_steps_grow(topic_ltm, topic_corpus):
    _, test, _ = topic_corpus
    batch = test[:32]
    ltm, guide = topic_ltm.family, topic_ltm.guide
    elbo = LatentELBO(num_particles=4)  # fresh noise, 4 draws per evaluation
    per_budget = []
    for steps in (0, 1, 4, 16):
        runs = []
        for seed in range(3):
            torch.manual_seed(seed)
            fit_local(ltm, guide, batch, InnerLoopConfig(steps=steps, lr=0.1))
            guide.detach_locals()
            runs.append(elbo.terms(ltm.model, pyro_guide(guide, ltm.prior), batch).elbo.detach())  # (B,)
        per_budget.append(torch.stack(runs).mean(0))  # (B,) averaged over seeds
    means = [e.mean().item() for e in per_budget]
    assert means[0] < means[1] < means[2] < means[3], means
    assert (per_budget[3] > per_budget[0]).float().mean() > 0.9  # nearly every sequence gains
