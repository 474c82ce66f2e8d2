"""The latent carries the topic: posterior means recover it, and the ELBO beats a vanilla decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ltm import Decoder, DecoderConfig
from tests.conftest import TOPIC_BATCH, TOPIC_DECODER, TOPIC_LR


def test_posterior_means_recover_the_topic(topic_ltm, topic_corpus):
    _, test, topics = topic_corpus
    topic_ltm.fit_local(test)
    means = topic_ltm.guide.locals["loc"].detach().flatten(1)  # (256, N*D)
    fit, held = slice(0, 128), slice(128, 256)
    centroids = torch.stack([means[fit][topics[fit] == k].mean(0) for k in range(4)])  # (4, N*D)
    predicted = torch.cdist(means[held], centroids).argmin(1)
    accuracy = (predicted == topics[held]).float().mean().item()
    assert accuracy >= 0.9, f"nearest-centroid topic accuracy {accuracy:.2f} < 0.90"


def test_heldout_elbo_beats_a_vanilla_decoder(topic_ltm, topic_corpus):
    train, test, _ = topic_corpus
    topic_ltm.fit_local(test)
    topic_ltm.guide.detach_locals()
    terms = topic_ltm.terms(test)
    n_tokens = test[:, 1:].numel()
    ltm_bound = -terms.elbo.sum().item() / n_tokens  # nats/token, an upper bound on the NLL

    torch.manual_seed(0)
    vanilla = Decoder(DecoderConfig(**TOPIC_DECODER))
    opt = torch.optim.AdamW(vanilla.parameters(), lr=TOPIC_LR, weight_decay=0.0)
    for batch in train.split(TOPIC_BATCH):
        logits = vanilla(batch[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        vanilla_nll = F.cross_entropy(vanilla(test[:, :-1]).flatten(0, 1), test[:, 1:].flatten()).item()
    assert terms.kl.sum() > 0  # the posterior moved away from the prior: the latent is in use
    assert ltm_bound < vanilla_nll, f"LTM bound {ltm_bound:.3f} vs vanilla NLL {vanilla_nll:.3f}"
