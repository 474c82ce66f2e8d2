"""Multi-digit addition and multiplication, written out digit by digit."""

from __future__ import annotations

import random

from ltm.data.reasoning.example import ReasoningExample
from ltm.data.reasoning.task import ReasoningTask


def _number(rng: random.Random, digits: int) -> int:
    """A uniform number of exactly `digits` digits."""
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)


class Addition(ReasoningTask):
    """`a+b=?` for two `digits`-digit numbers; one step per column, right to left, with the carry
    ("7+8+1=16": the digit written is the last one, the carry the rest)."""

    name, knob, knob_range = "addition", "digits", (1, 30)
    description = "sum of two n-digit numbers, one step per column"

    def draw(self, rng: random.Random) -> ReasoningExample:
        a, b = _number(rng, self.difficulty), _number(rng, self.difficulty)
        steps, carry = [], 0
        a_digits, b_digits = str(a).zfill(self.difficulty), str(b).zfill(self.difficulty)
        for x, y in zip(reversed(a_digits), reversed(b_digits), strict=True):
            total = int(x) + int(y) + carry
            steps.append(f"{x}+{y}+{carry}={total}")
            carry = total // 10
        return self.example(f"{a}+{b}=?", steps, str(a + b))


class Multiplication(ReasoningTask):
    """`a*b=?` for two `digits`-digit numbers; one step per digit of b, right to left: the shifted
    partial product and the running sum ("123*50=6150 sum=6888")."""

    name, knob, knob_range = "multiplication", "digits", (1, 12)
    description = "product of two n-digit numbers, one step per digit of the second"

    def draw(self, rng: random.Random) -> ReasoningExample:
        a, b = _number(rng, self.difficulty), _number(rng, self.difficulty)
        steps, running = [], 0
        for place, digit in enumerate(reversed(str(b))):
            shifted = int(digit) * 10 ** place
            running += a * shifted
            steps.append(f"{a}*{shifted}={a * shifted} sum={running}")
        return self.example(f"{a}*{b}=?", steps, str(a * b))
