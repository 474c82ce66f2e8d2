"""Scoring on reasoning tasks: accuracy of a model that knows the answers, the answer NLL against
its hand computation, counted FLOPs, and the refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltm import DecoderConfig, LatentThoughtModel
from ltm.core.errors import ConfigError
from ltm.data.reasoning import task_from_spec
from ltm.data.tokenizer import encode, train_bpe
from ltm.eval.reasoning_score import score_reasoning
from ltm.inference import InnerLoopConfig
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState
from ltm.ponder.vanilla import VanillaDecoder

TASK = task_from_spec("reasoning:addition?digits=2")


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([e.text() for e in TASK.examples(200, "train")], vocab_size=259)  # bytes only


def decoder_config(tokenizer, **overrides) -> DecoderConfig:
    base = dict(vocab_size=tokenizer.get_vocab_size(), block_size=96, n_layer=2, n_head=2, d_model=32,
                n_latent=0, d_latent=8)
    return DecoderConfig(**{**base, **overrides})


class Oracle(VanillaDecoder):
    """Decodes a scripted continuation per prompt, running no decoder at all (so no FLOPs)."""

    def __init__(self, decoder, scripts: dict[tuple[int, ...], list[int]]):
        super().__init__(decoder)
        self.scripts = scripts

    def _logits(self, rows: list[list[int]], at: int) -> torch.Tensor:
        out = torch.full((len(rows), self.decoder.cfg.vocab_size), -1e4)  # (B, V)
        for i, script in enumerate(rows):
            out[i, script[min(at, len(script) - 1)]] = 0.0
        return out

    def start_decode(self, tokens, max_len=None):
        rows = [self.scripts[tuple(t)] for t in tokens.tolist()]
        return self._logits(rows, 0), DecodeState({"rows": rows, "at": 0}, tokens.shape[1])

    def decode_step(self, token, state):
        state.cache["at"] += 1
        state.position += 1
        return self._logits(state.cache["rows"], state.cache["at"]), state


def scripted(tokenizer, examples, answer_for) -> dict:
    """{prompt ids: the continuation that writes the steps and `answer_for(example)`, then EOS}."""
    out = {}
    for e in examples:
        prompt = encode(tokenizer, e.prompt(), bos=True)
        text = "".join(f"{s}\n" for s in e.steps) + f"#### {answer_for(e)}\n"
        out[tuple(prompt)] = encode(tokenizer, text, eos=True)
    return out


def test_a_model_that_writes_the_answers_scores_all_and_its_tokens_are_counted(tokenizer):
    examples = TASK.examples(12, "test")
    scripts = scripted(tokenizer, examples, lambda e: e.answer)
    oracle = Oracle(Decoder(decoder_config(tokenizer)), scripts)
    score = score_reasoning(oracle, tokenizer, examples, with_steps=True, batch_size=5)
    assert score.accuracy == 1.0 and score.examples == 12
    assert score.tokens_per_answer == pytest.approx(sum(map(len, scripts.values())) / 12)


def test_wrong_answers_count_as_wrong(tokenizer):
    examples = TASK.examples(10, "test")
    wrong = {e.question for e in examples[::2]}
    scripts = scripted(tokenizer, examples,
                       lambda e: str(int(e.answer) + 1) if e.question in wrong else e.answer)
    oracle = Oracle(Decoder(decoder_config(tokenizer)), scripts)
    assert score_reasoning(oracle, tokenizer, examples, with_steps=True).accuracy == 0.5


@pytest.mark.parametrize("with_steps", [True, False])
def test_answer_nll_equals_its_hand_computation(tokenizer, with_steps):
    torch.manual_seed(0)
    family = VanillaDecoder(Decoder(decoder_config(tokenizer))).eval()
    examples = TASK.examples(3, "test")
    score = score_reasoning(family, tokenizer, examples, with_steps=with_steps, max_new_tokens=4)
    nll = 0.0
    for e in examples:
        head = encode(tokenizer, e.text(with_steps)[:e.text(with_steps).index("####")], bos=True)
        tail = encode(tokenizer, f"#### {e.answer}\n", eos=True)
        ids = torch.tensor([head + tail])  # (1, L)
        with torch.no_grad():
            logp = F.log_softmax(family.decoder(ids[:, :-1]), -1)  # (1, L-1, V)
        nll -= sum(float(logp[0, len(head) - 1 + i, t]) for i, t in enumerate(tail))
    assert score.answer_nll == pytest.approx(nll / 3, rel=1e-5)
    assert score.accuracy == 0.0 and score.tokens_per_answer <= 4


def test_flops_are_counted_and_grow_with_the_tokens_generated(tokenizer):
    torch.manual_seed(0)
    family = VanillaDecoder(Decoder(decoder_config(tokenizer))).eval()
    examples = TASK.examples(4, "test")
    short = score_reasoning(family, tokenizer, examples, with_steps=False, max_new_tokens=2)
    long = score_reasoning(family, tokenizer, examples, with_steps=False, max_new_tokens=12)
    blocks = sum(p.numel() for p in family.decoder.blocks.parameters())
    assert long.tokens_per_answer > short.tokens_per_answer
    assert long.flops_per_answer > short.flops_per_answer >= 2 * blocks * short.tokens_per_answer


def test_a_family_with_sequence_latents_is_scored_from_the_question_alone(tokenizer):
    torch.manual_seed(0)
    ltm = LatentThoughtModel.build(decoder_config(tokenizer, n_latent=2))
    examples = TASK.examples(3, "test")
    inner = InnerLoopConfig(steps=2)
    a = score_reasoning(ltm, tokenizer, examples, with_steps=False, max_new_tokens=3, inner=inner)
    b = score_reasoning(ltm, tokenizer, examples, with_steps=False, max_new_tokens=3, inner=inner)
    assert a == b and a.answer_nll > 0 and a.flops_per_answer > 0


def test_nothing_or_a_mixture_to_score_is_refused(tokenizer):
    family = VanillaDecoder(Decoder(decoder_config(tokenizer)))
    with pytest.raises(ConfigError, match="no reasoning examples"):
        score_reasoning(family, tokenizer, [], with_steps=True)
    mixed = TASK.examples(1, "test") + task_from_spec("reasoning:addition?digits=3").examples(1, "test")
    with pytest.raises(ConfigError, match="one task at one difficulty"):
        score_reasoning(family, tokenizer, mixed, with_steps=True)
