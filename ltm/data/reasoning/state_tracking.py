"""State tracking: where letters end up after k swaps, and the parity of k bits."""

from __future__ import annotations

import random
import string

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


POSITION_LETTERS = string.ascii_lowercase + string.ascii_uppercase  # a parity bit's position


class Parity(ReasoningTask):
    """"parity a1b0c1d1?": whether `bits` bits hold an odd number of ones (answer 1) or not (0); one
    step per bit: its position letter, the bit and the parity so far ("a11", "b01", "c10", "d11").

    Each bit carries a position letter (a-z, then A-Z) that its step repeats, so a step finds its
    bit by content (the letter) and then XORs two tokens beside each other. With the bare
    "parity 1 0 1 1?" and steps holding only the parity, a small decoder trained on several lengths
    at once did not learn the written steps (a step has to count 2n + 2 positions back, n varying;
    measured: chance after 1000 steps at 10-14 bits, d 128, 2 layers), though it did at one length.
    """

    name, knob, knob_range = "parity", "bits", (1, len(POSITION_LETTERS))
    description = "the parity of n bits, one step per bit"

    def draw(self, rng: random.Random) -> ReasoningExample:
        bits = [rng.randrange(2) for _ in range(self.difficulty)]
        steps, parity = [], 0
        for letter, b in zip(POSITION_LETTERS, bits, strict=False):
            parity ^= b
            steps.append(f"{letter}{b}{parity}")
        question = "".join(f"{letter}{b}" for letter, b in zip(POSITION_LETTERS, bits, strict=False))
        return self.example(f"parity {question}?", steps, str(parity))
