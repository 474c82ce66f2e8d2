"""Synthetic reasoning tasks whose answers take k serial steps, with a difficulty knob each.

    from ltm.data.reasoning import task_from_spec
    task = task_from_spec("reasoning:addition?digits=6")
    train = task.examples(10_000, "train", seed=0)   # ReasoningExample(question, steps, answer)
    print(train[0].text(with_steps=True))

Tasks: addition / multiplication (`digits`), reachability (`hops`, ProsQA-style), swaps (`k`),
parity (`bits`). Train and test questions are disjoint by construction (a hash of the question
decides its split).
"""

from __future__ import annotations

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

__all__ = ["ANSWER", "ANSWER_MARK", "PREFIX", "QUESTION", "STEP", "TASKS", "ReasoningExample",
           "ReasoningTask", "answer_of", "is_reasoning_spec", "task_from_spec"]


def is_reasoning_spec(dataset: str) -> bool:
    """Whether a dataset name names a reasoning task (`reasoning:NAME?KNOB=VALUE`)."""
    return dataset.startswith(PREFIX)


def task_from_spec(spec: str) -> ReasoningTask:
    """The task a dataset name asks for: `reasoning:addition?digits=6`, `reasoning:reachability?hops=3`.

    The knob may be omitted (`reasoning:parity`: its smallest value).

    Raises:
        ConfigError: for an unknown task, an unknown parameter or a value out of range.
    """
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    name, _, query = body.partition("?")
    if name not in TASKS:
        raise ConfigError(f"unknown reasoning task {name!r} in {spec!r}; the tasks are "
                          f"{', '.join(sorted(TASKS))}, as reasoning:NAME?KNOB=VALUE.")
    task = TASKS[name]
    params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    unknown = sorted(set(params) - {task.knob})
    if unknown:
        raise ConfigError(f"reasoning task {name} has no parameter {unknown[0]!r}; its difficulty is "
                          f"{task.knob} (e.g. {PREFIX}{name}?{task.knob}={task.knob_range[0] + 1}).")
    value = params.get(task.knob, str(task.knob_range[0]))
    try:
        difficulty = int(value)
    except ValueError:
        raise ConfigError(f"{name}'s {task.knob} must be an integer, got {value!r} in {spec!r}.") from None
    return task(difficulty)
