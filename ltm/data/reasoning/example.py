"""One reasoning example: a question, its written steps and its answer, and how it renders as text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

QUESTION, STEP, THOUGHTS, ANSWER = "question", "step", "thoughts", "answer"
ANSWER_MARK = "#### "
BOT, EOT, THOUGHT = "<|bot|>", "<|eot|>", "<|thought|>"  # special tokens of the reasoning tokenizer
MARKERS = (BOT, EOT, THOUGHT)


def thought_run(stage: int, thoughts_per_step: int) -> str:
    """The text that stands for `stage` replaced steps: <|bot|>, stage x c <|thought|>, <|eot|>."""
    return BOT + THOUGHT * (stage * thoughts_per_step) + EOT if stage else ""


@dataclass(frozen=True)
class ReasoningExample:
    """A question whose answer takes `len(steps)` serial steps to reach.

    Attributes:
        question: The question, one line, without a trailing newline.
        steps: The written steps, one line each, in order.
        answer: The answer, the exact string a greedy decode must produce.
        task: The task's name ("addition", "reachability", ...).
        difficulty: The task's difficulty knob (digits, hops, ...), as given.
    """

    question: str
    steps: tuple[str, ...]
    answer: str
    task: str
    difficulty: int

    def segments(self, with_steps: bool = True, stage: int = 0, thoughts_per_step: int = 1
                 ) -> list[tuple[str, str]]:
        """The rendered text as (text, role) pieces in order, role one of question, thoughts, step,
        answer.

        Args:
            with_steps: Write the steps out; without them the answer follows the question directly.
            stage: Coconut's curriculum stage s: the first s steps (all, if fewer) are replaced by
                `<|bot|>`, one run of `thoughts_per_step` `<|thought|>` slots per replaced step, and
                `<|eot|>`.
            thoughts_per_step: Continuous thoughts c per replaced step.
        """
        pieces = [(self.question + "\n", QUESTION)]
        if with_steps:
            hidden = min(stage, len(self.steps))
            if hidden:
                pieces.append((thought_run(hidden, thoughts_per_step), THOUGHTS))
            pieces += [(s + "\n", STEP) for s in self.steps[hidden:]]
        return pieces + [(ANSWER_MARK + self.answer + "\n", ANSWER)]

    def text(self, with_steps: bool = True, stage: int = 0, thoughts_per_step: int = 1) -> str:
        """The whole example as one document (arguments as in `segments`)."""
        return "".join(t for t, _ in self.segments(with_steps, stage, thoughts_per_step))

    def prompt(self, stage: int = 0, thoughts_per_step: int = 1) -> str:
        """What a model is given: the question and a newline (and, at a curriculum stage, its run of
        thoughts). It must write the steps left (if it was trained to) and then `#### <answer>`;
        `answer_of` reads the answer back."""
        return self.question + "\n" + thought_run(min(stage, len(self.steps)), thoughts_per_step)


def answer_of(generated: str) -> str | None:
    """The answer in a generated continuation: the text after the first answer mark, up to the end
    of its line; None when there is no answer mark."""
    at = generated.find(ANSWER_MARK)
    if at < 0:
        return None
    return generated[at + len(ANSWER_MARK):].split("\n", 1)[0].strip()


def split_of(question: str, test_percent: int) -> str:
    """"test" for a stable `test_percent` % of questions (by a hash of the text), else "train":
    a question lies in one split only, whatever seed or order drew it."""
    digest = hashlib.blake2b(question.encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % 100 < test_percent else "train"
