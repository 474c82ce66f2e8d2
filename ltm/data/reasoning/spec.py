"""Reasoning dataset names: `reasoning:TASK?KNOB=VALUE&examples=N&steps=0|1&stages=S&thoughts=C&
stage_steps=N&first_stage_steps=N&mask=none|question|steps`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ltm.core.errors import ConfigError
from ltm.data.reasoning.arithmetic import Addition, Multiplication
from ltm.data.reasoning.example import ANSWER, ReasoningExample
from ltm.data.reasoning.reachability import Reachability
from ltm.data.reasoning.state_tracking import Parity, Swaps
from ltm.data.reasoning.task import ReasoningTask

TASKS: dict[str, type[ReasoningTask]] = {
    t.name: t for t in (Addition, Multiplication, Reachability, Swaps, Parity)}
PREFIX = "reasoning:"
DEFAULT_EXAMPLES = 20_000
GENERATOR_VERSION = 3  # raise when a generator changes what a seed draws (cached corpora are rebuilt)
DEFAULTS = {"examples": DEFAULT_EXAMPLES, "steps": 1, "stages": 0, "thoughts": 1, "stage_steps": 0,
            "first_stage_steps": 0}
MASKS = ("none", "question", "steps")  # what `mask=` leaves out of the loss (see ReasoningCorpus.mask)


def is_reasoning_spec(dataset: str) -> bool:
    """Whether a dataset name names a reasoning task (`reasoning:NAME?KNOB=VALUE`)."""
    return dataset.startswith(PREFIX)


@dataclass(frozen=True)
class ReasoningCorpus:
    """What a reasoning dataset name asks for.

    Attributes:
        tasks: The task at each of its difficulties (`digits=3,4,5`: a third of the examples each).
        examples: Examples (documents) to draw from the train split (`examples=`, default 20,000).
        with_steps: Write the steps out (`steps=1`, the default) or answer directly (`steps=0`).
        stages: Coconut's curriculum: stages 0..S, stage s replacing the first s steps by thoughts
            (`stages=`, default 0: no curriculum). At most the number of steps of the hardest
            difficulty; an example with fewer steps has all of them replaced from its own count on.
        thoughts: Continuous thoughts c per replaced step (`thoughts=`, default 1).
        stage_steps: Training steps per stage before the last (`stage_steps=`; needed with stages).
        first_stage_steps: Training steps at stage 0, all steps written, before the first is
            replaced (`first_stage_steps=`; default 0: `stage_steps`). The Coconut paper trains
            stage 0 longest, so the model can write the steps before it must think them.
        mask: The targets left out of the loss (`mask=`): "none" (the default: every token is a
            target), "question" (the question and, at a curriculum stage, its run of thoughts: what a
            model is given at test time), "steps" (all but the answer line).
    """

    tasks: tuple[ReasoningTask, ...]
    examples: int = DEFAULT_EXAMPLES
    with_steps: bool = True
    stages: int = 0
    thoughts: int = 1
    stage_steps: int = 0
    mask: str = "none"
    first_stage_steps: int = 0

    @property
    def task(self) -> ReasoningTask:
        """The task at its first difficulty (the name and knob are those of every difficulty)."""
        return self.tasks[0]

    @property
    def difficulties(self) -> list[int]:
        return [t.difficulty for t in self.tasks]

    def stage_at(self, step: int) -> int:
        """The curriculum stage of training step `step` (0 without a curriculum)."""
        if not self.stages:
            return 0
        first = self.first_stage_steps or self.stage_steps
        return 0 if step < first else min(1 + (step - first) // self.stage_steps, self.stages)

    def drawn(self, seed: int = 0) -> list[ReasoningExample]:
        """The training examples: of the train split, as many of each difficulty (up to one), in a
        seeded order."""
        k = len(self.tasks)
        drawn = [e for i, task in enumerate(self.tasks)
                 for e in task.examples(self.examples // k + (i < self.examples % k), "train", seed)]
        random.Random(f"{seed}|order").shuffle(drawn)
        return drawn

    def documents(self, seed: int = 0, stage: int = 0) -> list[str]:
        """The training documents at `stage`: the drawn examples rendered as text."""
        return [e.text(self.with_steps, stage, self.thoughts) for e in self.drawn(seed)]

    def unscored_prefix(self, example: ReasoningExample, stage: int = 0) -> str:
        """The start of `example`'s document (at `stage`) whose tokens are not targets, by `mask`."""
        if self.mask == "question":
            return example.prompt(stage if self.with_steps else 0, self.thoughts)
        if self.mask == "steps":
            pieces = example.segments(self.with_steps, stage, self.thoughts)
            return "".join(t for t, role in pieces if role != ANSWER)
        return ""


def _integers(name: str, spec: str, params: dict) -> dict[str, int]:
    values = {}
    for key, default in DEFAULTS.items():
        try:
            values[key] = int(params.get(key, default))
        except ValueError:
            raise ConfigError(f"{name}'s {key} must be an integer, got {params[key]!r} in "
                              f"{spec!r}.") from None
    return values


def parse_reasoning(spec: str) -> ReasoningCorpus:
    """The corpus a dataset name asks for: `reasoning:addition?digits=6&examples=50000&steps=0`,
    `reasoning:addition?digits=3,4,5` (a mix of difficulties),
    `reasoning:parity?bits=8&stages=8&thoughts=1&stage_steps=300` (Coconut's curriculum).

    The task's knob may be omitted (its smallest value).

    Raises:
        ConfigError: for an unknown task or parameter, a value out of range, or a curriculum stage
            beyond the task's number of steps.
    """
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    name, _, query = body.partition("?")
    if name not in TASKS:
        raise ConfigError(f"unknown reasoning task {name!r} in {spec!r}; the tasks are "
                          f"{', '.join(sorted(TASKS))}, as reasoning:NAME?KNOB=VALUE.")
    task = TASKS[name]
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(params) - {task.knob, *DEFAULTS, "mask"})
    if unknown:
        raise ConfigError(f"reasoning task {name} has no parameter {unknown[0]!r}; it takes {task.knob} "
                          f"(its difficulty), {', '.join(DEFAULTS)} (e.g. {PREFIX}{name}?"
                          f"{task.knob}={task.knob_range[0] + 1}&examples=20000&steps=1), mask.")
    v = _integers(name, spec, params)
    try:
        levels = [int(x) for x in str(params.get(task.knob, task.knob_range[0])).split(",")]
    except ValueError:
        raise ConfigError(f"{name}'s {task.knob} must be an integer or a comma list of them, got "
                          f"{params[task.knob]!r} in {spec!r}.") from None
    mask = params.get("mask", MASKS[0])
    if mask not in MASKS:
        raise ConfigError(f"mask={mask!r} in {spec!r} is not one of {', '.join(MASKS)} (what the loss "
                          f"leaves out: nothing, the question, or all but the answer).")
    if (v["examples"] < 2 or v["steps"] not in (0, 1) or v["thoughts"] < 1 or v["stages"] < 0
            or v["first_stage_steps"] < 0):
        raise ConfigError(f"in {spec!r}, examples must be at least 2, steps 0 or 1, thoughts at least 1 "
                          f"and stages and first_stage_steps at least 0.")
    built = tuple(task(level) for level in levels)
    hardest = max(built, key=lambda t: t.steps_per_example)
    most = hardest.steps_per_example
    if v["stages"] > most:
        raise ConfigError(f"stages={v['stages']} is beyond the {most} written steps of {name} at "
                          f"{task.knob}={hardest.difficulty}; use stages <= {most}.")
    if v["stages"] and (v["stage_steps"] < 1 or not v["steps"]):
        raise ConfigError(f"a curriculum (stages={v['stages']} in {spec!r}) needs written steps to replace "
                          f"(steps=1) and stage_steps >= 1, the training steps of each stage.")
    return ReasoningCorpus(built, v["examples"], bool(v["steps"]), v["stages"], v["thoughts"],
                           v["stage_steps"], mask, v["first_stage_steps"])


def task_from_spec(spec: str) -> ReasoningTask:
    """The task a dataset name asks for: `reasoning:addition?digits=6`, `reasoning:reachability?hops=3`.

    Raises:
        ConfigError: for an unknown task, an unknown parameter or a value out of range.
    """
    return parse_reasoning(spec).task
