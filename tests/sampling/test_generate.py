"""The sampler: KV cache == no cache, per-row reproducibility, latents, filtering, eos, checks."""

from __future__ import annotations

import pytest
import torch

from ltm.inference import InnerLoopConfig
from ltm.models import Decoder, DecoderConfig, LatentThoughtModel
from ltm.ponder.vanilla import VanillaDecoder
from ltm.priors import build_prior
from ltm.sampling import (
    SamplingConfig,
    conditional_latents,
    decode,
    filter_logits,
    generate,
    prior_latents,
)

RAGGED = [[3, 7, 9, 1, 4], [5, 2], [8, 8, 8, 1, 6], [11]]  # two of length 5, one of 2, one of 1
INNER = InnerLoopConfig(steps=3, lr=0.3)


def make_decoder(window: int | None = None, n_latent: int = 0, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, d_model=32,
                        n_latent=n_latent, d_latent=16 if n_latent else None, window=window)
    decoder = Decoder(cfg)
    with torch.no_grad():  # peaked logits and a visible effect of z, so samples depend on context
        decoder.embed.weight.mul_(5)
        for block in decoder.blocks:
            if block.cross is not None:
                block.cross.kv.weight.mul_(20)
    return decoder


def make_vanilla(window: int | None = None, seed: int = 0) -> VanillaDecoder:
    return VanillaDecoder(make_decoder(window, seed=seed))


def make_ltm(prior: str = "standard_normal", window: int | None = None, **kwargs) -> LatentThoughtModel:
    decoder = make_decoder(window, n_latent=4)
    return LatentThoughtModel(decoder, build_prior(prior, 4, 16, **kwargs))


def greedy(n: int = 6, **kwargs) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=n, temperature=0.0, **kwargs)


# ---- KV cache vs recomputation -------------------------------------------------------------------

@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("latent", [False, True])
def test_cache_equals_no_cache(window, latent):
    decoder = make_ltm(window=window) if latent else make_vanilla(window)
    z = torch.randn(len(RAGGED), 4, 16) if latent else None
    for cfg in (SamplingConfig(max_new_tokens=8, seed=3), SamplingConfig(max_new_tokens=8, top_k=5),
                SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=0.9)):
        cached = decode(decoder, RAGGED, cfg, z)
        plain = decode(decoder, RAGGED, SamplingConfig(**{**vars(cfg), "use_cache": False}), z)
        assert cached == plain
    logits = {True: [], False: []}
    for use_cache in (True, False):
        out = decode(decoder, RAGGED, greedy(8, use_cache=use_cache), z,
                     on_step=lambda t, lg, tok, c=use_cache: logits[c].append(lg.clone()))
        assert all(len(row) == 8 for row in out)
    for a, b in zip(logits[True], logits[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [None, 3])
def test_ragged_batch_equals_rows_alone(window):
    family = make_vanilla(window)
    cfg = SamplingConfig(max_new_tokens=8, seed=5)
    batched = decode(family, RAGGED, cfg)
    alone = [decode(family, [p], cfg, first_row=i)[0] for i, p in enumerate(RAGGED)]
    assert batched == alone
    logits = []  # the shortest prompt's group comes first: its first step reads [11] alone
    decode(family, RAGGED, greedy(4), on_step=lambda t, lg, tok: logits.append(lg[0]))
    torch.testing.assert_close(logits[0], family.decoder(torch.tensor([RAGGED[3]]))[0, -1],
                               atol=1e-5, rtol=0)


# ---- seeds and per-row reproducibility ------------------------------------------------------------

def test_same_seed_same_output_different_seed_different():
    decoder = make_vanilla()
    prompts = [[1, 2, 3]] * 4
    a = decode(decoder, prompts, SamplingConfig(max_new_tokens=10, seed=1))
    assert a == decode(decoder, prompts, SamplingConfig(max_new_tokens=10, seed=1))
    assert a != decode(decoder, prompts, SamplingConfig(max_new_tokens=10, seed=2))
    assert len({tuple(r) for r in a}) > 1  # rows of one request draw independently


def test_ltm_conditional_batched_equals_one_at_a_time():
    ltm = make_ltm()
    cfg = SamplingConfig(max_new_tokens=6, seed=11)
    out = generate(ltm, RAGGED, num_samples=2, sampling=cfg, inner=INNER)
    rows = [p for p in RAGGED for _ in range(2)]
    alone = [generate(ltm, [p], sampling=cfg, inner=INNER, first_row=r)[0] for r, p in enumerate(rows)]
    assert out == alone
    z = conditional_latents(ltm, rows, INNER, seed=11)  # (8, 4, 16)
    for r, p in enumerate(rows):
        torch.testing.assert_close(z[r:r + 1], conditional_latents(ltm, [p], INNER, 11, first_row=r),
                                   atol=1e-5, rtol=1e-5)
    assert not torch.allclose(z[0], z[1])  # two samples of one prompt: different noise


def test_ltm_unconditional_and_vanilla_batched_equal_one_at_a_time():
    ltm = make_ltm()
    cfg = SamplingConfig(max_new_tokens=6, seed=4)
    out = generate(ltm, unconditional=True, bos_id=0, num_samples=5, sampling=cfg)
    assert len(out) == 5 and len({tuple(r) for r in out}) > 1
    assert out == [generate(ltm, unconditional=True, bos_id=0, sampling=cfg, first_row=r)[0]
                   for r in range(5)]
    decoder = make_vanilla()
    out = generate(decoder, RAGGED, num_samples=2, sampling=cfg)
    rows = [p for p in RAGGED for _ in range(2)]
    assert out == [generate(decoder, [p], sampling=cfg, first_row=r)[0] for r, p in enumerate(rows)]


def test_global_rng_untouched():
    ltm = make_ltm()
    state = torch.get_rng_state()
    generate(ltm, RAGGED, sampling=SamplingConfig(max_new_tokens=3), inner=INNER)
    generate(ltm, unconditional=True, bos_id=0, num_samples=2, sampling=SamplingConfig(max_new_tokens=3))
    assert torch.equal(state, torch.get_rng_state())


# ---- latents ---------------------------------------------------------------------------------------

def test_conditional_output_continues_the_prompt():
    ltm = make_ltm()
    prompt, cfg = [4, 9, 2, 7, 1], greedy(6)
    out = generate(ltm, [prompt], sampling=cfg, inner=INNER, posterior_mean=True)[0]
    assert len(out) == 6  # continuation only
    z = conditional_latents(ltm, [prompt], INNER, seed=0, posterior_mean=True)  # (1, 4, 16)
    assert decode(ltm, [prompt], cfg, z)[0] == out
    full = torch.tensor([prompt + out])  # (1, 11): the text is prompt + continuation
    predicted = ltm.full_logits(full[:, :-1], z).argmax(-1)[0, len(prompt) - 1:]  # (6,) greedy
    assert predicted.tolist() == out


def test_conditional_fit_moves_q_and_one_token_prompts_use_the_prior():
    ltm = make_ltm()
    moved = conditional_latents(ltm, [[4, 9, 2, 7, 1]], INNER, seed=0, posterior_mean=True)
    at_init = conditional_latents(ltm, [[4, 9, 2, 7, 1]], InnerLoopConfig(steps=0), 0, posterior_mean=True)
    assert moved.abs().max() > 1e-3 and at_init.abs().max() == 0
    z = conditional_latents(ltm, [[5, 6], [11]], INNER, seed=7)  # (2, 4, 16)
    torch.testing.assert_close(z[1:], prior_latents(ltm, 1, seed=7, first_row=1))


def test_unconditional_latents_are_prior_draws(monkeypatch):
    ltm = make_ltm("learned_normal", init_scale=0.1)
    with torch.no_grad():
        ltm.prior.loc.fill_(5.0)
    z = prior_latents(ltm, 64, seed=0)  # (64, 4, 16)
    assert abs(z.mean().item() - 5.0) < 0.01 and abs(z.std().item() - 0.1) < 0.01
    seen = {}
    import ltm.sampling.sampler as gen

    def spy(model, n, seed, **kw):
        seen["z"] = prior_latents(model, n, seed, **kw)
        return seen["z"]

    monkeypatch.setattr(gen, "prior_latents", spy)
    cfg = SamplingConfig(max_new_tokens=5, seed=2)
    out = generate(ltm, unconditional=True, bos_id=0, num_samples=3, sampling=cfg)
    assert seen["z"].shape == (3, 4, 16)
    assert out == decode(ltm, [[0]] * 3, cfg, seen["z"])


def test_other_priors_mixture_and_degenerate():
    ltm = make_ltm("mixture")
    z = prior_latents(ltm, 3, seed=1)
    torch.testing.assert_close(z[2:], prior_latents(ltm, 1, seed=1, first_row=2))
    ltm = make_ltm("delta")  # default guide becomes the prior guide; z is the point
    z = conditional_latents(ltm, [[1, 2, 3]], INNER, seed=0)
    assert torch.equal(z[0], ltm.prior.value.detach())


# ---- filtering and stopping -----------------------------------------------------------------------

def test_top_k_one_is_greedy():
    decoder = make_vanilla()
    assert (decode(decoder, RAGGED, SamplingConfig(max_new_tokens=8, top_k=1, seed=9))
            == decode(decoder, RAGGED, greedy(8)))


def test_top_p_keeps_smallest_set_with_mass_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()  # (1, 4)
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p))[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.4) == [0] and kept(0.75) == [0, 1] and kept(0.85) == [0, 1, 2] and kept(1.0) == [0, 1, 2, 3]
    torch.manual_seed(0)
    logits = torch.randn(20, 30) * 2  # (20, 30)
    for p in (0.1, 0.5, 0.9):
        keep = torch.isfinite(filter_logits(logits, top_p=p))  # (20, 30)
        probs = logits.softmax(-1)
        for row in range(20):
            ranked = probs[row].sort(descending=True).values
            m = int((ranked.cumsum(0) < p).sum()) + 1  # smallest m with mass >= p
            assert keep[row].sum() == m and probs[row][keep[row]].min() >= ranked[m - 1]
    top3 = torch.isfinite(filter_logits(logits, top_k=3))
    assert torch.equal(top3, torch.zeros_like(top3).scatter(-1, logits.topk(3).indices, True))


def test_eos_stops_each_row_independently():
    decoder = make_vanilla()
    cfg = SamplingConfig(max_new_tokens=10, seed=3)
    free = decode(decoder, RAGGED, cfg)
    eos = free[0][2]
    steps = []
    stopped = decode(decoder, RAGGED, SamplingConfig(**{**vars(cfg), "eos_id": eos}),
                     on_step=lambda t, lg, tok: steps.append(t))
    for a, b in zip(free, stopped, strict=True):
        assert b == (a[:a.index(eos) + 1] if eos in a else a)
    assert stopped[0][-1] == eos and len(stopped[0]) <= 3
    lone = []
    one = decode(decoder, RAGGED[:1], SamplingConfig(**{**vars(cfg), "eos_id": eos}),
                 on_step=lambda t, lg, tok: lone.append(t))
    assert one == stopped[:1] and lone == list(range(len(one[0])))  # the lone row stops the loop


def test_zero_new_tokens():
    assert decode(make_vanilla(), RAGGED, SamplingConfig(max_new_tokens=0)) == [[]] * 4


# ---- bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.5}, "temperature must be >= 0"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"top_p": 0.0}, "top_p must lie in"),
    ({"top_p": 1.5}, "top_p must lie in"),
    ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
])
def test_bad_sampling_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_bad_requests():
    decoder, ltm = make_vanilla(), make_ltm()
    with pytest.raises(ValueError, match=r"20 tokens and max_new_tokens is 10: 30 exceeds .* block_size 24"):
        decode(decoder, [[1] * 20], SamplingConfig(max_new_tokens=10))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        decode(decoder, [[1], []], SamplingConfig(max_new_tokens=2))
    with pytest.raises(ValueError, match="outside"):
        decode(decoder, [[1, 50]], SamplingConfig(max_new_tokens=2))
    with pytest.raises(ValueError, match="eos_id 99"):
        decode(decoder, [[1]], SamplingConfig(max_new_tokens=2, eos_id=99))
    with pytest.raises(ValueError, match="no prompts given"):
        generate(decoder)
    with pytest.raises(ValueError, match="needs bos_id"):
        generate(ltm, unconditional=True)
    with pytest.raises(ValueError, match="num_samples"):
        generate(decoder, [[1]], num_samples=0)
    with pytest.raises(ValueError, match=r"decoder expects latents of shape \(1, 4, 16\)"):
        decode(ltm, [[1, 2]], SamplingConfig(max_new_tokens=2))  # an LTM decodes only with z
    with pytest.raises(ValueError, match="model 'vanilla' has no sequence-level latent"):
        decode(decoder, [[1, 2]], SamplingConfig(max_new_tokens=2), torch.zeros(1, 4, 16))
    with pytest.raises(ValueError, match="block_size"):  # checked before the (costly) fit
        generate(ltm, [[1] * 20], sampling=SamplingConfig(max_new_tokens=10), inner=INNER)
    with pytest.raises(ValueError, match="top_k"):
        filter_logits(torch.zeros(1, 5), top_k=0)
