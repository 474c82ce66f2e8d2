"""Learning-rate schedules: within the fast inner loop, and warm-up + cosine for the slow step."""

from __future__ import annotations

import math

from ltm.core.errors import ConfigError

INNER_SCHEDULES = ("constant", "cosine", "linear")


def inner_lr(step: int, total: int, lr: float, schedule: str, min_ratio: float = 0.1) -> float:
    """Fast learning rate at inner step `step` of `total` (decays to min_ratio * lr)."""
    if schedule == "constant" or total <= 1:
        return lr
    progress = step / (total - 1)
    if schedule == "cosine":
        return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if schedule == "linear":
        return lr * (1 - (1 - min_ratio) * progress)
    raise ConfigError(f"unknown inner-loop schedule '{schedule}'; choose one of {INNER_SCHEDULES}.")


def warmup_cosine(step: int, warmup: int, total: int | None, min_ratio: float = 0.1) -> float:
    """Multiplier of the slow learning rate: linear warm-up, then cosine decay to min_ratio by step
    `total` (None: no decay)."""
    if step < warmup:
        return (step + 1) / warmup
    if total is None:
        return 1.0
    if step >= total:
        return min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
