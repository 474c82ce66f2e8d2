"""Scoring held-out text over several processes: each takes its rows of every batch, the sums meet.

Under `data_parallel(reducer)` (set by `ltm.evaluate` and the trainer's validation under torchrun)
every bound of `ltm.inference.bounds`, the posterior diagnostics and the exact NLL visit only this
process's rows of each batch (`local_batches`), draw their noise as rows of the whole batch's draw
(`ShardNoise`), and add their sums over the processes (`reduce_sums`, `gather`) before dividing:
the numbers equal one process's, up to float summation order. Outside it nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ltm.inference.fixed_noise import ShardNoise
from ltm.inference.posterior_fit import as_batches

_REDUCER = None  # the active reducer: .rank, .world_size, .lockstep, .sum_(tensor, what), .gather(obj, what)
_STAND_INS: set[int] = set()  # ids of the stand-in batches being scored (`counted`)


@contextlib.contextmanager
def data_parallel(reducer):
    """Score only this process's rows and sum over the processes with `reducer` (e.g. an
    `ltm.training.distributed.DistContext`); None: one process, no change."""
    global _REDUCER
    previous, _REDUCER = _REDUCER, (reducer if reducer is not None and reducer.world_size > 1 else None)
    try:
        yield
    finally:
        _REDUCER = previous


def active() -> bool:
    """Whether scores are being split over several processes."""
    return _REDUCER is not None


def share(rows: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous share of `rows` rows (shares differ by at most one row)."""
    return slice(rank * rows // world, (rank + 1) * rows // world)


def local_batches(tokens, device: torch.device) -> Iterator[torch.Tensor]:
    """The batches of `tokens` (see `as_batches`), each cut to this process's rows (B_r, T+1), with
    its noise drawn for the whole batch and sliced. A batch with no row for this process is
    skipped, unless the reducer's `lockstep` says every process must run every batch (a sharded
    model all-gathers its weights in each forward): then the process runs the batch's first row as
    a stand-in (1, T+1), which the scorers leave out of their sums (`counted`)."""
    for batch in as_batches(tokens, device):
        if _REDUCER is None:
            yield batch
            continue
        rows = share(batch.shape[0], _REDUCER.rank, _REDUCER.world_size)
        if rows.stop > rows.start:
            with ShardNoise(rows.start, batch.shape[0]):
                yield batch[rows]  # (B_r, T+1)
        elif _REDUCER.lockstep:
            stand_in = batch[:1]  # (1, T+1)
            _STAND_INS.add(id(stand_in))
            try:
                with ShardNoise(0, batch.shape[0]):
                    yield stand_in
            finally:
                _STAND_INS.discard(id(stand_in))


def counted(batch: torch.Tensor) -> bool:
    """Whether a batch from `local_batches` counts: False for the stand-in of a process with no
    rows of it (run only so that every process takes part in a sharded model's collectives)."""
    return id(batch) not in _STAND_INS


def reduce_sums(*values: float) -> tuple[float, ...]:
    """The sums of `values` over the processes (themselves on one process)."""
    if _REDUCER is None:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    _REDUCER.sum_(t, "the held-out score's all-reduce")
    return tuple(t.tolist())


def gather(value) -> list:
    """Every process's `value`, in rank order ([value] on one process)."""
    if _REDUCER is None:
        return [value]
    return _REDUCER.gather(value, "the held-out diagnostics' gather")
