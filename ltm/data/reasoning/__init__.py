"""Synthetic reasoning tasks whose answers take k serial steps, with a difficulty knob each.

    from ltm.data.reasoning import task_from_spec
    task = task_from_spec("reasoning:addition?digits=6")
    train = task.examples(10_000, "train", seed=0)   # ReasoningExample(question, steps, answer)
    print(train[0].text(with_steps=True))

As training data: `--dataset "reasoning:addition?digits=6&examples=20000&steps=1"` (`steps=0`: the
answer follows the question directly). Every token of the text is a training target.

Tasks: addition / multiplication (`digits`), reachability (`hops`, ProsQA-style), swaps (`k`),
parity (`bits`). Train and test questions are disjoint by construction (a hash of the question
decides its split).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from ltm.core.errors import ConfigError
from ltm.data.reasoning.arithmetic import Addition, Multiplication
from ltm.data.reasoning.example import ANSWER, ANSWER_MARK, QUESTION, STEP, ReasoningExample, answer_of
from ltm.data.reasoning.reachability import Reachability
from ltm.data.reasoning.state_tracking import Parity, Swaps
from ltm.data.reasoning.task import ReasoningTask

TASKS: dict[str, type[ReasoningTask]] = {
    t.name: t for t in (Addition, Multiplication, Reachability, Swaps, Parity)}
PREFIX = "reasoning:"
DEFAULT_EXAMPLES = 20_000
GENERATOR_VERSION = 1  # raise when a generator changes what a seed draws (cached corpora are rebuilt)

__all__ = ["ANSWER", "ANSWER_MARK", "PREFIX", "QUESTION", "STEP", "TASKS", "ReasoningExample",
           "ReasoningCorpus", "ReasoningTask", "answer_of", "is_reasoning_spec", "parse_reasoning",
           "task_from_spec"]


def is_reasoning_spec(dataset: str) -> bool:
    """Whether a dataset name names a reasoning task (`reasoning:NAME?KNOB=VALUE`)."""
    return dataset.startswith(PREFIX)


@dataclass(frozen=True)
class ReasoningCorpus:
    """What a reasoning dataset name asks for: the task, how many training examples, and whether
    the written steps are part of the text.

    Attributes:
        task: The task at its difficulty.
        examples: Training examples (documents) to draw (`examples=`, default 20,000).
        with_steps: Write the steps out (`steps=1`, the default) or answer directly (`steps=0`).
    """

    task: ReasoningTask
    examples: int = DEFAULT_EXAMPLES
    with_steps: bool = True

    def documents(self, seed: int = 0) -> list[str]:
        """The training documents: examples of the train split rendered as text."""
        return [e.text(self.with_steps) for e in self.task.examples(self.examples, "train", seed)]


def parse_reasoning(spec: str) -> ReasoningCorpus:
    """The corpus a dataset name asks for: `reasoning:addition?digits=6&examples=50000&steps=0`.

    The task's knob may be omitted (its smallest value).

    Raises:
        ConfigError: for an unknown task, an unknown parameter or a value out of range.
    """
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    name, _, query = body.partition("?")
    if name not in TASKS:
        raise ConfigError(f"unknown reasoning task {name!r} in {spec!r}; the tasks are "
                          f"{', '.join(sorted(TASKS))}, as reasoning:NAME?KNOB=VALUE.")
    task = TASKS[name]
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(params) - {task.knob, "examples", "steps"})
    if unknown:
        raise ConfigError(f"reasoning task {name} has no parameter {unknown[0]!r}; it takes {task.knob} "
                          f"(its difficulty), examples and steps (e.g. {PREFIX}{name}?"
                          f"{task.knob}={task.knob_range[0] + 1}&examples=20000&steps=1).")
    values = {}
    for key, default in ((task.knob, task.knob_range[0]), ("examples", DEFAULT_EXAMPLES), ("steps", 1)):
        try:
            values[key] = int(params.get(key, default))
        except ValueError:
            raise ConfigError(f"{name}'s {key} must be an integer, got {params[key]!r} in "
                              f"{spec!r}.") from None
    if values["examples"] < 2 or values["steps"] not in (0, 1):
        raise ConfigError(f"in {spec!r}, examples must be at least 2 and steps 0 or 1.")
    return ReasoningCorpus(task(values[task.knob]), values["examples"], bool(values["steps"]))


def task_from_spec(spec: str) -> ReasoningTask:
    """The task a dataset name asks for: `reasoning:addition?digits=6`, `reasoning:reachability?hops=3`.

    Raises:
        ConfigError: for an unknown task, an unknown parameter or a value out of range.
    """
    return parse_reasoning(spec).task
