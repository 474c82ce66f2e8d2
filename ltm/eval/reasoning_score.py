"""Scoring a model on a reasoning task: exact-match accuracy of the greedy answer, the answer's NLL,
and the tokens and FLOPs each answer costs.

    from ltm.data.reasoning import task_from_spec
    examples = task_from_spec("reasoning:addition?digits=4").examples(200, "test")
    score = score_reasoning(family, tokenizer, examples, with_steps=True)
    score.accuracy, score.tokens_per_answer, score.flops_per_answer

A prompt is BOS and the question's line (for Coconut, followed by its run of thoughts at the stage
it reached); the model writes its steps (if it was trained to) and
`#### <answer>`; the answer is read from the first answer mark. FLOPs are counted, not estimated:
`torch.utils.flop_counter` over the whole generation, the LTM's fit of q(z | question) included.
The answer NLL is -log p(`#### answer` | question and, for a run trained with written steps, the
true steps), teacher-forced; a family with sequence-level thoughts is scored with z at the mean of
q(z | question), fitted on the question alone (never on the answer it scores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ltm.core.errors import ConfigError, DataError
from ltm.data.reasoning import ANSWER, ReasoningExample, answer_of
from ltm.data.tokenizer import decode, encode, special_ids
from ltm.inference import InnerLoopConfig
from ltm.sampling import SamplingConfig, generate
from ltm.sampling.thoughts import conditional_latents


@dataclass
class ReasoningScore:
    """What one model scores on one task at one difficulty.

    Attributes:
        task: The task's name.
        difficulty: Its difficulty knob's value.
        examples: Questions scored.
        accuracy: Share of greedy answers equal to the true answer.
        answer_nll: Mean -log p of the answer line in nats (teacher-forced; see the module doc).
        tokens_per_answer: Mean tokens generated per question (steps, answer and EOS).
        flops_per_answer: Mean FLOPs of generating one answer (prompt and fit included).
        with_steps: Whether the model was asked to write steps before the answer.
    """

    task: str
    difficulty: int
    examples: int
    accuracy: float
    answer_nll: float
    tokens_per_answer: float
    flops_per_answer: float
    with_steps: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _prompt_ids(tokenizer, example: ReasoningExample, stage: int, thoughts: int) -> list[int]:
    return encode(tokenizer, example.prompt(stage, thoughts), bos=True)


def _answer_nll(family, tokenizer, examples: list[ReasoningExample], with_steps: bool,
                inner: InnerLoopConfig, stage: int, thoughts: int) -> float:
    """Mean teacher-forced -log p(answer line | question [, true steps]) in nats."""
    total = 0.0
    for e in examples:
        pieces = e.segments(with_steps, stage, thoughts)
        head = "".join(t for t, role in pieces if role != ANSWER)
        tail = next(t for t, role in pieces if role == ANSWER)
        head_ids, tail_ids = encode(tokenizer, head, bos=True), encode(tokenizer, tail, eos=True)
        ids = torch.tensor([head_ids + tail_ids], device=family.decoder.embed.weight.device)  # (1, L)
        latents = None
        if family.sequence_latent:
            latents = conditional_latents(family, [_prompt_ids(tokenizer, e, stage, thoughts)], inner, seed=0,
                                          posterior_mean=True)  # (1, N, D), from the question only
        with torch.no_grad():
            logits = family.full_logits(ids[:, :-1], latents)  # (1, L-1, V)
        logp = F.log_softmax(logits.float(), -1)[0, len(head_ids) - 1:]  # (len(tail), V)
        total -= float(logp.gather(-1, ids[0, len(head_ids):, None]).sum())
    return total / len(examples)


def score_reasoning(family, tokenizer, examples: list[ReasoningExample], *, with_steps: bool,
                    max_new_tokens: int | None = None, batch_size: int = 32,
                    inner: InnerLoopConfig | None = None, stage: int = 0,
                    thoughts_per_step: int = 1) -> ReasoningScore:
    """Greedy accuracy, answer NLL, tokens and FLOPs per answer of `family` on `examples`.

    Args:
        family: A trained model family (any `ltm.models.Family`).
        tokenizer: The tokenizer it was trained with.
        examples: Examples of one task at one difficulty (e.g. `task.examples(n, "test")`).
        with_steps: The model writes steps before its answer (it was trained on them).
        max_new_tokens: Most tokens generated per question (default: the longest true
            continuation's length plus a half, plus 8, within the block size).
        batch_size: Questions decoded together.
        inner: Inner-loop settings for families with sequence-level thoughts (default K = 16).
        stage: The curriculum stage the model reached (Coconut): the prompt ends with that stage's
            run of thoughts, and the model writes only the steps left.
        thoughts_per_step: Continuous thoughts per replaced step.

    Raises:
        ConfigError: for no examples, or examples of several tasks or difficulties.
        DataError: for examples longer than the model's block size.
    """
    if not examples:
        raise ConfigError("no reasoning examples to score; pass at least one.")
    kinds = {(e.task, e.difficulty) for e in examples}
    if len(kinds) > 1:
        raise ConfigError(f"score one task at one difficulty at a time; got {sorted(kinds)}.")
    inner = inner or InnerLoopConfig(steps=16)
    _, eos_id, _ = special_ids(tokenizer)
    prompts = [_prompt_ids(tokenizer, e, stage, thoughts_per_step) for e in examples]
    whole = max(len(encode(tokenizer, e.text(with_steps, stage, thoughts_per_step), bos=True, eos=True))
                for e in examples)
    block, longest_prompt = family.decoder.cfg.block_size, max(map(len, prompts))
    if whole > block:
        raise DataError(f"{examples[0].task} at difficulty {examples[0].difficulty} writes examples of up "
                        f"to {whole} tokens, more than the model's block size {block}; score a lower "
                        f"difficulty.")
    if max_new_tokens is None:
        longest = whole - longest_prompt
        max_new_tokens = min(longest + longest // 2 + 8, block - longest_prompt)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, eos_id=eos_id)
    correct, generated, counter = 0, 0, FlopCounterMode(display=False)
    with counter:
        for start in range(0, len(examples), batch_size):
            rows = generate(family, prompts[start:start + batch_size], sampling=sampling, inner=inner,
                            posterior_mean=True)
            for e, new in zip(examples[start:start + batch_size], rows, strict=True):
                generated += len(new)
                correct += answer_of(decode(tokenizer, new)) == e.answer
    n = len(examples)
    task, difficulty = kinds.pop()
    nll = _answer_nll(family, tokenizer, examples, with_steps, inner, stage, thoughts_per_step)
    return ReasoningScore(task, difficulty, n, correct / n, nll, generated / n, counter.get_total_flops() / n,
                          with_steps)
