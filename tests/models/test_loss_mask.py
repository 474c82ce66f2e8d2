"""Targets a task leaves out of the loss: every family reads the masked ids as inputs and scores
only the other targets, exactly as the unmasked block with those terms dropped."""

from __future__ import annotations

import pyro
import pytest
import torch

from ltm.core.loss_mask import block_ids, mask_targets, scored_targets, split_block
from ltm.core.sites import IGNORE_INDEX, TOKEN_SITE
from ltm.families import FAMILIES
from ltm.inference import InnerLoopConfig, LatentELBO, build_guide, fit_local
from ltm.inference.guides.base import pyro_guide
from ltm.models import DecoderConfig

CFG = DecoderConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=32)


def blocks() -> tuple[torch.Tensor, torch.Tensor]:
    """Clean blocks (2, 13) and which of their ids are masked: ids 1-5 of row 0, 1-3 of row 1."""
    tokens = torch.randint(6, 40, (2, CFG.block_size + 1), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(tokens.shape[1])  # (T+1,)
    masked = (pos >= 1) & (pos < torch.tensor([[6], [4]]))  # (2, T+1)
    return tokens, masked


def test_split_block_reads_masked_ids_back_and_drops_their_targets():
    tokens, masked = blocks()
    stored = mask_targets(tokens, masked)
    assert (stored[masked] < 0).all() and torch.equal(stored[~masked], tokens[~masked])
    assert torch.equal(block_ids(stored), tokens)
    inputs, targets = split_block(stored)
    assert torch.equal(inputs, tokens[:, :-1])
    assert torch.equal(targets, tokens[:, 1:].masked_fill(masked[:, 1:], IGNORE_INDEX))
    assert scored_targets(stored).tolist() == [12 - 5, 12 - 3]
    plain_inputs, plain_targets = split_block(tokens)  # prose: the plain shift, unchanged
    assert torch.equal(plain_inputs, tokens[:, :-1]) and torch.equal(plain_targets, tokens[:, 1:])
    padded = tokens.clone()
    padded[:, -2:] = IGNORE_INDEX  # padding marked IGNORE_INDEX stays padding
    assert torch.equal(block_ids(padded), padded) and scored_targets(padded).tolist() == [10, 10]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_scores_only_the_unmasked_targets(name):
    torch.manual_seed(0)
    family = FAMILIES[name].from_config(CFG).eval()
    tokens, masked = blocks()
    expected = tokens[:, 1:].masked_fill(masked[:, 1:], IGNORE_INDEX)  # (B, T)
    pyro.set_rng_seed(1)
    clean = pyro.poutine.trace(family.model).get_trace(tokens).nodes[TOKEN_SITE]
    pyro.set_rng_seed(1)
    site = pyro.poutine.trace(family.model).get_trace(mask_targets(tokens, masked)).nodes[TOKEN_SITE]
    # Families that place tokens themselves (Coconut's thought slots) mask those too, in both traces.
    placed = clean["value"] == IGNORE_INDEX
    assert torch.equal(site["value"], expected.masked_fill(placed, IGNORE_INDEX))
    got = site["fn"].log_prob(site["value"])  # (B,)
    torch.testing.assert_close(got, clean["fn"].log_prob(site["value"]), rtol=1e-6, atol=1e-5)
    assert (got > clean["fn"].log_prob(clean["value"])).all()  # fewer terms, each a log-probability < 0


@pytest.mark.parametrize("name", ["ltm", "ponderlm2_stochastic"])
def test_the_inner_loop_fits_on_masked_blocks(name):
    torch.manual_seed(0)
    family = FAMILIES[name].from_config(CFG)
    guide = build_guide(family.default_guide)
    tokens, masked = blocks()
    fit_local(family, guide, mask_targets(tokens, masked), InnerLoopConfig(steps=2, lr=0.01))
    guide.detach_locals()
    terms = LatentELBO().terms(family.model, pyro_guide(guide, family.prior), mask_targets(tokens, masked))
    assert torch.isfinite(terms.elbo).all()


def test_the_training_loss_is_reported_per_scored_target():
    import torch.nn.functional as F

    from ltm.inference import DualRateOptimizer, EmptyGuide, SlowConfig

    torch.manual_seed(0)
    family = FAMILIES["vanilla"].from_config(CFG)
    tokens, masked = blocks()
    stored = mask_targets(tokens, masked)
    inputs, targets = split_block(stored)
    with torch.no_grad():
        nll = F.cross_entropy(family.train_logits(inputs)[0].transpose(1, 2), targets, reduction="sum",
                              ignore_index=IGNORE_INDEX)
    opt = DualRateOptimizer(family, EmptyGuide(), InnerLoopConfig(steps=0),
                            SlowConfig(lr=1e-3, warmup_steps=0, decay_steps=4, weight_decay=0.0))
    result = opt.step(stored)
    assert result.loss == pytest.approx(float(nll) / int(scored_targets(stored).sum()), rel=1e-5)
