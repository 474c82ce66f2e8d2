"""The reasoning generators: every answer agrees with a solver written here (not the generator's
code) on 10,000 examples per task, the written steps lead to it, and train and test are disjoint."""

from __future__ import annotations

import re
from collections import deque
from itertools import pairwise

import pytest

from ltm.core.errors import ConfigError, DataError
from ltm.data.reasoning import TASKS, answer_of, task_from_spec

N = 10_000


def solve_addition(question: str) -> str:
    a, b = re.fullmatch(r"(\d+)\+(\d+)=\?", question).groups()
    return str(int(a) + int(b))


def solve_multiplication(question: str) -> str:
    a, b = re.fullmatch(r"(\d+)\*(\d+)=\?", question).groups()
    return str(int(a) * int(b))


def reachable(facts: list[tuple[str, str]], start: str) -> dict[str, int]:
    """Breadth-first distances from `start` along the is-a facts."""
    out: dict[str, list[str]] = {}
    for a, b in facts:
        out.setdefault(a, []).append(b)
    dist, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for nxt in out.get(node, []):
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                queue.append(nxt)
    return dist


def parse_reachability(question: str):
    *fact_texts, query = re.split(r"(?<=[.?]) ", question)
    facts = [re.fullmatch(r"(\w+) is a (\w+)\.", f).groups() for f in fact_texts]
    start, y, z = re.fullmatch(r"Is every (\w+) a (\w+) or a (\w+)\?", query).groups()
    return facts, start, (y, z)


def solve_reachability(question: str) -> str:
    facts, start, options = parse_reachability(question)
    dist = reachable(facts, start)
    hits = [o for o in options if o in dist]
    assert len(hits) == 1, f"{len(hits)} options reachable in {question!r}"
    return hits[0]


def solve_swaps(question: str) -> str:
    letters, swaps, at = re.fullmatch(r"([A-E]{5}) (.*); at (\d)\?", question).groups()
    state = list(letters)
    for swap in swaps.split(", "):
        i, j = (int(k) - 1 for k in swap.split()[1:])
        state[i], state[j] = state[j], state[i]
    return state[int(at) - 1]


def solve_parity(question: str) -> str:
    pairs = re.findall(r"[a-zA-Z]([01])", re.fullmatch(r"parity ((?:[a-zA-Z][01])+)\?", question).group(1))
    return str(sum(map(int, pairs)) % 2)


SOLVERS = {"addition": (solve_addition, 7), "multiplication": (solve_multiplication, 4),
           "reachability": (solve_reachability, 4), "swaps": (solve_swaps, 9), "parity": (solve_parity, 13)}


def test_every_task_has_a_solver_here():
    assert set(SOLVERS) == set(TASKS)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_answers_agree_with_an_independent_solver(name):
    solve, difficulty = SOLVERS[name]
    task = task_from_spec(f"reasoning:{name}?{TASKS[name].knob}={difficulty}")
    examples = task.examples(N, "train", seed=1)
    assert len({e.question for e in examples}) > N // 2  # not a handful of repeats
    for e in examples:
        assert e.answer == solve(e.question), e.question
        assert (e.task, e.difficulty) == (name, difficulty)


def test_addition_steps_carry_to_the_answer():
    for e in task_from_spec("reasoning:addition?digits=5").examples(2000, "train"):
        digits, carry = "", 0
        assert len(e.steps) == 5
        for step in e.steps:
            x, y, c, total = map(int, re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d+)", step).groups())
            assert c == carry and total == x + y + c
            digits, carry = str(total % 10) + digits, total // 10
        assert e.answer == str(int(str(carry) + digits))


def test_multiplication_steps_sum_to_the_answer():
    for e in task_from_spec("reasoning:multiplication?digits=3").examples(2000, "train"):
        a, b = map(int, re.fullmatch(r"(\d+)\*(\d+)=\?", e.question).groups())
        running = 0
        for place, step in enumerate(e.steps):
            parts = re.fullmatch(r"(\d+)\*(\d+)=(\d+) sum=(\d+)", step).groups()
            x, shifted, product, total = map(int, parts)
            assert x == a and shifted == (b // 10 ** place % 10) * 10 ** place and product == a * shifted
            running += product
            assert total == running
        assert str(running) == e.answer


@pytest.mark.parametrize("hops", [1, 3, 6])
def test_reachability_needs_exactly_its_hops_and_the_steps_are_the_path(hops):
    for e in task_from_spec(f"reasoning:reachability?hops={hops}").examples(1000, "train"):
        facts, start, _ = parse_reachability(e.question)
        assert reachable(facts, start)[e.answer] == hops
        path = [re.fullmatch(r"(\w+) is a (\w+)\.", s).groups() for s in e.steps]
        assert path[0][0] == start and path[-1][1] == e.answer and len(path) == hops
        assert all(step in facts for step in path) and all(a[1] == b[0] for a, b in pairwise(path))


def test_swaps_and_parity_steps_track_the_state():
    for e in task_from_spec("reasoning:swaps?k=6").examples(500, "train"):
        at = int(re.search(r"at (\d)\?", e.question).group(1))
        assert len(e.steps) == 6 and e.steps[-1][at - 1] == e.answer
    for e in task_from_spec("reasoning:parity?bits=9").examples(500, "train"):
        assert len(e.steps) == 9 and e.steps[-1][2] == e.answer
        pairs = re.findall(r"[a-zA-Z][01]", e.question)
        assert pairs == [s[:2] for s in e.steps]  # a step repeats its bit and its position letter
        assert [p[0] for p in pairs] == list("abcdefghi")


@pytest.mark.parametrize("spec", ["reasoning:addition?digits=2", "reasoning:reachability?hops=2",
                                  "reasoning:swaps?k=2", "reasoning:parity?bits=8",
                                  "reasoning:multiplication?digits=2"])
def test_train_and_test_questions_are_disjoint_and_seeded(spec):
    task = task_from_spec(spec)
    train = {e.question for e in task.examples(3000, "train", seed=0) + task.examples(3000, "train", seed=1)}
    test = task.examples(20, "test", seed=0)
    assert not train & {e.question for e in test}
    assert len({e.question for e in test}) == 20  # distinct
    assert [e.question for e in task.examples(20, "test", seed=0)] == [e.question for e in test]
    assert [e.question for e in task.examples(20, "test", seed=1)] != [e.question for e in test]


def test_rendering_with_and_without_steps_and_reading_the_answer_back():
    e = task_from_spec("reasoning:addition?digits=3").examples(1, "train")[0]
    with_steps, direct = e.text(with_steps=True), e.text(with_steps=False)
    assert with_steps.startswith(e.prompt()) and direct.startswith(e.prompt())
    assert direct == e.prompt() + f"#### {e.answer}\n"
    assert [role for _, role in e.segments()] == ["question", "step", "step", "step", "answer"]
    assert answer_of(with_steps[len(e.prompt()):]) == e.answer
    assert answer_of("1+2+0=3\n#### 42\n#### 7") == "42" and answer_of("no mark") is None


@pytest.mark.parametrize("spec, words", [
    ("reasoning:sorting?n=3", "unknown reasoning task 'sorting'"),
    ("reasoning:addition?hops=3", "has no parameter 'hops'"),
    ("reasoning:addition?digits=0", "digits must be an integer from 1"),
    ("reasoning:parity?bits=many", "bits must be an integer"),
    ("reasoning:parity?bits=4&mask=answer", "mask='answer' in"),
])
def test_bad_specs_get_one_sentence(spec, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        task_from_spec(spec)


def test_a_difficulty_too_small_for_the_test_set_asked_is_refused():
    with pytest.raises(DataError, match="distinct test questions"):
        task_from_spec("reasoning:addition?digits=1").examples(50, "test")


def test_a_mix_of_difficulties_draws_as_many_of_each():
    from collections import Counter

    from ltm.data.reasoning import parse_reasoning

    corpus = parse_reasoning("reasoning:addition?digits=2,3,4&examples=301")
    assert corpus.difficulties == [2, 3, 4] and corpus.task.difficulty == 2
    docs = corpus.documents()
    lengths = Counter(len(d.split("+")[0]) for d in docs)  # digits of the first number
    assert lengths == {2: 101, 3: 100, 4: 100} and docs == corpus.documents()
    with pytest.raises(ConfigError, match="stages=5 is beyond the 4 written steps of addition at digits=4"):
        parse_reasoning("reasoning:addition?digits=2,4&stages=5&stage_steps=5")
    # A stage beyond an easier difficulty's steps hides all of that example's steps, no more.
    mixed = parse_reasoning("reasoning:addition?digits=2,4&examples=10&stages=3&stage_steps=5")
    thoughts = Counter(d.count("<|thought|>") for d in mixed.documents(stage=3))
    assert thoughts == {2: 5, 3: 5}
    with pytest.raises(ConfigError, match="an integer or a comma list"):
        parse_reasoning("reasoning:addition?digits=2-4")


def test_the_curriculum_schedule_keeps_stage_zero_for_first_stage_steps():
    from ltm.data.reasoning import parse_reasoning

    plain = parse_reasoning("reasoning:addition?digits=4&stages=3&stage_steps=10")
    assert [plain.stage_at(s) for s in (0, 9, 10, 19, 20, 30, 999)] == [0, 0, 1, 1, 2, 3, 3]
    warm = parse_reasoning("reasoning:addition?digits=4&stages=3&stage_steps=10&first_stage_steps=25")
    assert [warm.stage_at(s) for s in (0, 24, 25, 34, 35, 45, 999)] == [0, 0, 1, 1, 2, 3, 3]
    assert parse_reasoning("reasoning:addition?digits=4").stage_at(10_000) == 0
    with pytest.raises(ConfigError, match="first_stage_steps at least 0"):
        parse_reasoning("reasoning:addition?digits=4&stages=3&stage_steps=10&first_stage_steps=-1")
