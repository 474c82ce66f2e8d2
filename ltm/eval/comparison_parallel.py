"""Train and score a comparison's runs several at a time (`python -m ltm.compare --jobs N`).

Each run trains and is scored in a spawned process of its own, with the comparison's thread count,
exactly as it would in turn (same seeds, same batches, the same files: a run's numbers do not
depend on `--jobs`). The data of every run is prepared in this process first, so no two workers
build the same cached corpus. results.md is rewritten here as each run finishes. On 2 cores with
one thread per run, `--jobs 2` trains two runs at once.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import torch

from ltm.data import prepare_data


def _work(work_on, inst, cost: dict, settings, tag: str, threads: int) -> None:
    """One run in a worker process: train and score it with `work_on`, logging with its tag."""
    torch.set_num_threads(threads)

    def log(message: str) -> None:
        print(message if message.startswith(tag) else f"{tag}: {message}", flush=True)

    work_on(inst, cost, settings, tag, log)


def work_in_parallel(work_on, comp, instances: list, costs: dict, tags: dict, jobs: int, done,
                     log=print) -> None:
    """Work on `instances` in `jobs` processes, calling `done(inst)` here as each one finishes.

    Args:
        work_on: a module-level function `(inst, cost, settings, tag, log)` that trains and scores
            one run (`comparison_run.work_on`); passed in, so this module imports nothing of the
            comparison's own.

    Raises:
        The first error a run raised, after the runs already started have finished (the pending ones
        are not started); the same command continues the unfinished runs.
    """
    seen = set()
    for inst in instances:  # each distinct corpus built once, before any worker reads it
        key = (repr(inst.config.data), str(inst.config.data_cache_dir()))
        if key not in seen:
            seen.add(key)
            prepare_data(inst.config.data, inst.config.data_cache_dir())
    log(f"training and scoring {len(instances)} run(s), {jobs} at a time")
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(_work, work_on, inst, costs[inst.key], comp.eval, tags[inst.key],
                               threads): inst for inst in instances}
        error = None
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                inst = pending.pop(future)
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    error = error or future.exception()
                    for other in pending:
                        other.cancel()
                else:
                    done(inst)
        if error is not None:
            raise error
