"""On a CUDA GPU (skipped without one; `bench/gpu.sh` runs them with `-m cuda`): a short training
run on the GPU matches the CPU's, and KV-cached decoding on the GPU equals the full pass."""

from __future__ import annotations

import pytest
import torch

from ltm.families import FAMILIES
from ltm.models import DecoderConfig
from ltm.training.config import TrainConfig
from ltm.training.trainer import Trainer
from tests.cli_helpers import shared_paths, train_losses

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_a_short_fp32_run_on_the_gpu_follows_the_cpu_run(tmp_path_factory, tmp_path):
    corpus, cache = shared_paths(tmp_path_factory)
    losses = {}
    for device in ("cpu", "cuda"):
        cfg = TrainConfig.from_dict(dict(
            dataset=str(corpus), cache_dir=str(cache), out_dir=str(tmp_path / device), vocab_size=300,
            block_size=32, d_model=32, n_layer=2, n_head=2, inner_steps=2, batch_size=8, max_steps=5,
            eval_every=0, save_every=0, progress=False, precision="fp32", device=device,
            ltm={"n_latent": 2, "d_latent": 8}))
        Trainer(cfg).train()
        losses[device] = [loss for _, loss in train_losses(tmp_path / device)]
    assert losses["cuda"] == pytest.approx(losses["cpu"], abs=1e-3)


@pytest.mark.parametrize("name", ["vanilla", "ltm", "ponderlm2"])
def test_kv_cached_decoding_on_the_gpu_equals_the_full_pass(name):
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, d_model=32)
    family = FAMILIES[name].from_config(cfg).cuda().eval()
    tokens = torch.randint(0, 64, (2, 8), device="cuda")  # (B, T)
    z = torch.randn(2, *family.prior.event_shape, device="cuda") if family.sequence_latent else None
    with torch.no_grad():
        logits = family.full_logits(tokens, z)  # (B, T, V)
        first, state = family.prefill(tokens[:, :5], 8, z)
        nxt, _ = family.decode_step(tokens[:, 5], state)
    torch.testing.assert_close(first, logits[:, 4], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(nxt, logits[:, 5], rtol=1e-4, atol=1e-4)
