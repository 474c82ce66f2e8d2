"""The base of a reasoning task: one difficulty knob, seeded draws, train and test disjoint."""

from __future__ import annotations

import random
from typing import ClassVar

from ltm.core.errors import ConfigError, DataError
from ltm.data.reasoning.example import ReasoningExample, split_of

SPLITS = ("train", "test")


class ReasoningTask:
    """A generator of examples that take `difficulty` serial steps (digits, hops, swaps, bits).

    Subclasses set `name`, `knob` (the difficulty parameter's name), `knob_range` (inclusive) and
    implement `draw`. A question belongs to the test split when its text hashes into the test
    share (`split_of`), so the two splits are disjoint by construction, for any seeds.

    Args:
        difficulty: The knob's value.
        test_percent: The share of all questions (by hash) reserved for testing.
    """

    name: ClassVar[str]
    knob: ClassVar[str]
    knob_range: ClassVar[tuple[int, int]]
    description: ClassVar[str]

    def __init__(self, difficulty: int, test_percent: int = 10):
        lo, hi = self.knob_range
        if not isinstance(difficulty, int) or not lo <= difficulty <= hi:
            raise ConfigError(f"{self.name}'s {self.knob} must be an integer from {lo} to {hi}, "
                              f"got {difficulty!r}.")
        self.difficulty, self.test_percent = difficulty, test_percent

    @property
    def steps_per_example(self) -> int:
        """Written steps of every example: one per unit of difficulty (digit, hop, swap, bit)."""
        return self.difficulty

    @property
    def spec(self) -> str:
        """The task's dataset name: `reasoning:NAME?KNOB=VALUE`."""
        return f"reasoning:{self.name}?{self.knob}={self.difficulty}"

    def draw(self, rng: random.Random) -> ReasoningExample:
        """One example, any split (the caller keeps those of the split it wants)."""
        raise NotImplementedError

    def examples(self, n: int, split: str, seed: int = 0) -> list[ReasoningExample]:
        """`n` examples of `split`; the test split's questions are distinct.

        Raises:
            DataError: when the task at this difficulty has fewer than `n` distinct test questions.
        """
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
        rng = random.Random(f"{self.spec}|{split}|{seed}")
        out, seen, tries = [], set(), 0
        while len(out) < n:
            tries += 1
            if tries > 200 * n + 10_000:
                raise DataError(f"{self.spec} has only {len(out)} distinct {split} questions; ask for "
                                f"fewer examples or a higher {self.knob}.")
            example = self.draw(rng)
            if split_of(example.question, self.test_percent) != split:
                continue
            if split == "test":
                if example.question in seen:
                    continue
                seen.add(example.question)
            out.append(example)
        return out

    def example(self, question: str, steps: list[str], answer: str) -> ReasoningExample:
        return ReasoningExample(question, tuple(steps), answer, self.name, self.difficulty)
