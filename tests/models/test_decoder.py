"""The decoder: KV-cache decoding equals recomputation; masks; shape and length errors."""

from __future__ import annotations

import pytest
import torch

from ltm import Decoder
from ltm.models.attention import causal_mask
from tests.conftest import tiny_config


def _incremental(decoder, x, chunks, **kw):
    cache = decoder.new_cache(x.shape[0])
    outs, start = [], 0
    for size in chunks:
        outs.append(decoder(x[:, start:start + size], cache=cache, **kw))
        start += size
    return torch.cat(outs, dim=1)  # (B, T, V)


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("chunks", [[1] * 20, [7, 1, 1, 5, 6], [20]])
def test_kv_cache_logits_equal_recomputation(window, chunks):
    decoder = Decoder(tiny_config(window=window)).eval()
    x = torch.randint(0, 37, (2, 20))  # (B, T)
    z = torch.randn(2, 4, 8)  # (B, N, D)
    with torch.no_grad():
        full = decoder(x, latents=z)
        step = _incremental(decoder, x, chunks, latents=z)
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_causal_fast_path_equals_explicit_mask():
    decoder = Decoder(tiny_config(n_latent=0)).eval()
    x = torch.randint(0, 37, (2, 12))
    explicit = torch.ones(12, 12, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(decoder(x), decoder(x, attn_mask=explicit))


def test_no_dense_mask_when_window_covers_sequence():
    assert causal_mask(16, 16, window=32, device=torch.device("cpu")) == (None, True)
    assert causal_mask(1, 16, window=None, device=torch.device("cpu")) == (None, False)
    mask, is_causal = causal_mask(4, 4, window=2, device=torch.device("cpu"))
    assert not is_causal and mask.tolist() == [[True, False, False, False], [True, True, False, False],
                                               [False, True, True, False], [False, False, True, True]]


def test_window_limits_what_a_token_sees():
    decoder = Decoder(tiny_config(n_latent=0, window=3)).eval()
    x = torch.randint(0, 37, (1, 10))
    y = x.clone()
    y[0, 0] = (x[0, 0] + 1) % 37  # change a token more than 3 positions before the last
    with torch.no_grad():
        torch.testing.assert_close(decoder(x)[0, -1], decoder(y)[0, -1])
        assert not torch.allclose(decoder(x)[0, 2], decoder(y)[0, 2])


def test_latents_change_the_output():
    decoder = Decoder(tiny_config()).eval()
    x = torch.randint(0, 37, (1, 8))
    with torch.no_grad():
        a = decoder(x, latents=torch.zeros(1, 4, 8))
        b = decoder(x, latents=torch.ones(1, 4, 8))
    assert not torch.allclose(a, b)


def test_errors_name_the_cause():
    decoder = Decoder(tiny_config())
    x = torch.randint(0, 37, (2, 8))
    with pytest.raises(ValueError, match=r"latents of shape \(2, 4, 8\)"):
        decoder(x, latents=torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="latents of shape"):
        decoder(x)
    with pytest.raises(ValueError, match="exceeds the model's block_size 48"):
        decoder(torch.randint(0, 37, (1, 49)), latents=torch.zeros(1, 4, 8))
    with pytest.raises(ValueError, match="n_latent=0"):
        Decoder(tiny_config(n_latent=0))(x, latents=torch.zeros(2, 4, 8))
    with pytest.raises(ValueError, match="split evenly"):
        tiny_config(n_latent=3)
    cache = decoder.new_cache(2, max_len=4)
    with pytest.raises(ValueError, match="KV cache holds 4 slots"):
        decoder(x, latents=torch.zeros(2, 4, 8), cache=cache)
