"""`python -m ltm.evaluate --task`: a run trained on a reasoning task, scored by difficulty.

    python -m ltm.evaluate --checkpoint runs/addition --task run --difficulties 3,4,5

Each difficulty gets `--task-examples` test questions (disjoint from every training question by
construction, `ltm.data.reasoning`), scored by `ltm.eval.reasoning_score`: greedy exact-match
accuracy, answer NLL, and the tokens and FLOPs one answer costs.
"""

from __future__ import annotations

from ltm.core.errors import ConfigError
from ltm.data.reasoning import TASKS, ReasoningCorpus, ReasoningTask, is_reasoning_spec, parse_reasoning
from ltm.eval.reasoning_score import score_reasoning


def task_plan(args, dataset: str, block_size: int) -> list[tuple[ReasoningTask, ReasoningCorpus, int]]:
    """The (task at a difficulty, the corpus the run was trained on, questions) to score, from
    `--task`, `--difficulties` and `--task-examples`, for a run trained on `dataset`.

    Raises:
        ConfigError: for a run trained on prose, an unknown task, a difficulty out of range or not
            an integer, or fewer than one question.
    """
    if not is_reasoning_spec(dataset):
        raise ConfigError(f"--task scores runs trained on a reasoning task, and this one was trained on "
                          f"{dataset!r}; train one with --dataset 'reasoning:addition?digits=4' first.")
    trained = parse_reasoning(dataset)
    name = trained.task.name if args.task == "run" else args.task
    if name not in TASKS:
        raise ConfigError(f"unknown reasoning task {name!r} for --task; use run (the run's own, "
                          f"{trained.task.name}) or one of {', '.join(sorted(TASKS))}.")
    if args.task_examples < 1:
        raise ConfigError(f"--task-examples must be at least 1, got {args.task_examples}.")
    if args.difficulties is None:
        levels = trained.difficulties
    else:
        try:
            levels = [int(d) for d in args.difficulties.split(",") if d.strip()]
        except ValueError:
            raise ConfigError(f"--difficulties must be a comma list of integers like 2,4,6, got "
                              f"{args.difficulties!r}.") from None
    return [(TASKS[name](level), trained, args.task_examples) for level in levels]


def score_tasks(family, tokenizer, plan: list[tuple[ReasoningTask, ReasoningCorpus, int]], inner, *,
                seed: int = 0, batch_size: int = 32, step: int | None = None, log=print) -> list[dict]:
    """Score each entry of `plan` (see `task_plan`) as the run was trained: with or without written
    steps, and (Coconut) with the thoughts of the curriculum stage its training `step` reached
    (None: the last stage); one table row each."""
    rows = []
    log(f"{'task':<16}{'difficulty':>11}{'accuracy':>10}{'answer NLL':>12}{'tokens/answer':>15}"
          f"{'GFLOP/answer':>14}")
    for task, trained, n in plan:
        score = score_reasoning(family, tokenizer, task.examples(n, "test", seed),
                                with_steps=trained.with_steps, batch_size=batch_size, inner=inner,
                                stage=trained.stages if step is None else trained.stage_at(step),
                                thoughts_per_step=trained.thoughts)
        log(f"{task.name:<16}{task.difficulty:>11}{score.accuracy:>10.3f}{score.answer_nll:>12.3f}"
              f"{score.tokens_per_answer:>15.1f}{score.flops_per_answer / 1e9:>14.4f}")
        rows.append({"spec": task.spec, **score.to_dict()})
    return rows
