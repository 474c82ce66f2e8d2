"""ProsQA-style reachability: made-up concepts linked by "X is a Y." facts; which of two concepts is
every X? Answering takes following `hops` facts from X."""

from __future__ import annotations

import random
from itertools import pairwise

from ltm.data.reasoning.example import ReasoningExample
from ltm.data.reasoning.task import ReasoningTask

ONSETS = ("b", "br", "d", "f", "g", "gl", "k", "l", "m", "n", "p", "r", "s", "sk", "t", "v", "w", "y", "z")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("mpus", "rpus", "ntus", "lpus", "mbo", "rko", "ndle", "ppa", "zz", "x")


def concept_names(rng: random.Random, n: int) -> list[str]:
    """`n` distinct made-up words like "wumpus" or "grindle"."""
    names: set[str] = set()
    while len(names) < n:
        names.add(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS))
    return rng.sample(sorted(names), n)


class Reachability(ReasoningTask):
    """"Is every X a Y or a Z?" over shuffled facts "A is a B.": a chain of `hops` facts leads from
    X to the answer; the other option ends a chain of as many facts from another start, and dead
    ends branch off both chains (no fact leads from X's side to the other option). The steps are
    the facts of X's chain, in order."""

    name, knob, knob_range = "reachability", "hops", (1, 12)
    description = "which of two concepts a concept reaches through `hops` is-a facts"

    def draw(self, rng: random.Random) -> ReasoningExample:
        d = self.difficulty
        names = concept_names(rng, 3 * d + 3)
        chain, other, dead = names[:d + 1], names[d + 1:2 * d + 2], names[2 * d + 2:]
        facts = list(pairwise(chain)) + list(pairwise(other))
        for end in dead:  # a dead end hangs off a node of either chain; it leads nowhere
            facts.append((rng.choice(chain[:-1] + other[:-1]), end))
        rng.shuffle(facts)
        start, answer, wrong = chain[0], chain[-1], other[-1]
        options = [answer, wrong]
        rng.shuffle(options)
        query = f"Is every {start} a {options[0]} or a {options[1]}?"
        question = " ".join(f"{a} is a {b}." for a, b in facts) + " " + query
        steps = [f"{a} is a {b}." for a, b in pairwise(chain)]
        return self.example(question, steps, answer)
