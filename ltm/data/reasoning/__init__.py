"""Synthetic reasoning tasks whose answers take k serial steps, with a difficulty knob each.

    from ltm.data.reasoning import task_from_spec
    task = task_from_spec("reasoning:addition?digits=6")
    train = task.examples(10_000, "train", seed=0)   # ReasoningExample(question, steps, answer)
    print(train[0].text(with_steps=True))

As training data: `--dataset "reasoning:addition?digits=6&examples=20000&steps=1"` (`steps=0`: the
answer follows the question directly), one example per block, padded; `&stages=S&thoughts=C&
stage_steps=N` adds Coconut's curriculum (stage s replaces the first s steps by s x C thoughts,
for N training steps each; `&first_stage_steps=M` keeps stage 0, every step written, for M).
Every token of the text is a training target unless `&mask=question`
(the question and its thoughts are given, not scored) or `&mask=steps` (only the answer line is
scored); the Coconut family leaves its thought slots and `<|eot|>` unscored.

Tasks: addition / multiplication (`digits`), reachability (`hops`, ProsQA-style), swaps (`k`),
parity (`bits`). Train and test questions are disjoint by construction (a hash of the question
decides its split).
"""

from __future__ import annotations

from ltm.data.reasoning.example import (
    ANSWER,
    ANSWER_MARK,
    BOT,
    EOT,
    MARKERS,
    QUESTION,
    STEP,
    THOUGHT,
    THOUGHTS,
    ReasoningExample,
    answer_of,
)
from ltm.data.reasoning.spec import (
    GENERATOR_VERSION,
    PREFIX,
    TASKS,
    ReasoningCorpus,
    is_reasoning_spec,
    parse_reasoning,
    task_from_spec,
)
from ltm.data.reasoning.task import ReasoningTask

__all__ = ["ANSWER", "ANSWER_MARK", "BOT", "EOT", "GENERATOR_VERSION", "MARKERS", "PREFIX", "QUESTION",
           "STEP", "TASKS", "THOUGHT", "THOUGHTS", "ReasoningCorpus", "ReasoningExample", "ReasoningTask",
           "answer_of", "is_reasoning_spec", "parse_reasoning", "task_from_spec"]
