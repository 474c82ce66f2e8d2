"""State tracking: where letters end up after k swaps, and the parity of k bits."""

from __future__ import annotations

import random

from ltm.data.reasoning.example import ReasoningExample
from ltm.data.reasoning.task import ReasoningTask

LETTERS = "ABCDE"


class Swaps(ReasoningTask):
    """"ABCDE swap 1 3, swap 2 5, ...; at 4?": the letter at a position after `k` swaps of two
    positions (1-based); one step per swap, the arrangement after it."""

    name, knob, knob_range = "swaps", "k", (1, 40)
    description = "the letter at a position after k swaps of five letters"

    def draw(self, rng: random.Random) -> ReasoningExample:
        state, swaps, steps = list(LETTERS), [], []
        for _ in range(self.difficulty):
            i, j = rng.sample(range(len(LETTERS)), 2)
            state[i], state[j] = state[j], state[i]
            swaps.append(f"swap {i + 1} {j + 1}")
            steps.append("".join(state))
        at = rng.randrange(len(LETTERS))
        question = f"{LETTERS} {', '.join(swaps)}; at {at + 1}?"
        return self.example(question, steps, state[at])


class Parity(ReasoningTask):
    """"parity 1 0 1 1?": whether `bits` bits hold an odd number of ones (answer 1) or not (0); one
    step per bit, the parity so far."""

    name, knob, knob_range = "parity", "bits", (1, 64)
    description = "the parity of n bits, one step per bit"

    def draw(self, rng: random.Random) -> ReasoningExample:
        bits = [rng.randrange(2) for _ in range(self.difficulty)]
        steps, parity = [], 0
        for b in bits:
            parity ^= b
            steps.append(str(parity))
        return self.example(f"parity {' '.join(map(str, bits))}?", steps, str(parity))
