"""Numbers over seeds: mean and standard deviation of a run, the difference of a run from its
control with its standard error, and the verdict sentence written from them.

A difference is "beyond 2 SE" when |mean difference| > 2 x its standard error (Welch: the two
runs' seed spreads added, sqrt(s_a^2 / n_a + s_b^2 / n_b)). Lower is better (nats per token), so a
negative difference is a win for the run.

    stats = difference([3.90, 3.91, 3.89], [3.95, 3.96, 3.94])  # Difference(mean=-0.05, se=0.008, ...)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

TARGET_MARGIN = 0.03  # nats per token: the margin a latent run must beat its controls by


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation; None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_sd(values: list[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


@dataclass
class Difference:
    """Run minus control, in nats per token (negative: the run is better).

    Attributes:
        mean: Mean of the run's values minus mean of the control's.
        se: Standard error of `mean` (None with one seed on either side).
        n: Seeds of the run and of the control.
    """

    mean: float
    se: float | None
    n: tuple[int, int]

    @property
    def significant(self) -> bool:
        """Beyond two standard errors (never with one seed)."""
        return self.se is not None and abs(self.mean) > 2 * self.se

    @property
    def win(self) -> bool:
        return self.mean < 0 and self.significant

    @property
    def loss(self) -> bool:
        return self.mean > 0 and self.significant

    def meets(self, margin: float = TARGET_MARGIN) -> bool:
        """A win by at least `margin` nats per token, beyond 2 SE."""
        return self.win and -self.mean >= margin

    def __str__(self) -> str:
        se = "" if self.se is None else f" ± {self.se:.4f}"
        mark = " (beyond 2 SE)" if self.significant else ""
        return f"{self.mean:+.4f}{se}{mark}"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "n": list(self.n), "beyond_2se": self.significant}


def difference(run: list[float], control: list[float]) -> Difference:
    """The run's mean minus the control's, with the Welch standard error."""
    (a, sa), (b, sb) = mean_sd(run), mean_sd(control)
    se = None if sa is None or sb is None else math.sqrt(sa ** 2 / len(run) + sb ** 2 / len(control))
    return Difference(a - b, se, (len(run), len(control)))


def _ks(ks: list[int]) -> str:
    return "K=" + ", ".join(str(k) for k in ks)


def verdict(run: str, diffs: dict[str, dict[int, Difference]], descriptions: dict[str, str],
            target_k: int, target_kinds: tuple[str, ...]) -> str:
    """One sentence (or two) from the differences of `run` to each control at each K.

    Args:
        diffs: {control kind: {K: Difference}}.
        descriptions: {control kind: its words, e.g. "the parameter-matched vanilla"}.
        target_k: The K of the target.
        target_kinds: The controls the target names (those present are checked).
    """
    if not diffs:
        return f"{run}: no controls."
    wins, losses, level = [], [], []
    for kind, by_k in diffs.items():
        won = [k for k, d in by_k.items() if d.win]
        lost = [k for k, d in by_k.items() if d.loss]
        at = by_k.get(target_k) or next(iter(by_k.values()))
        if won:
            wins.append(f"{descriptions[kind]} at {_ks(won)}")
        if lost:
            losses.append(f"{descriptions[kind]} at {_ks(lost)}")
        if not won and not lost:
            level.append(f"{descriptions[kind]} ({at})")
    one_seed = all(d.se is None for by_k in diffs.values() for d in by_k.values())
    parts = ["beats " + "; ".join(wins) + " (beyond 2 SE)" if wins else "beats no control"]
    if losses:
        parts.append("loses to " + "; ".join(losses) + " (beyond 2 SE)")
    if level:
        parts.append("is within 2 SE of " + " and ".join(level) + f" at K={target_k}")
    sentence = f"{run} " + ", ".join(parts) + "."
    if one_seed:
        sentence = (f"{run}, one seed (no standard error; a lead, not a finding): differences "
                    + "; ".join(f"{descriptions[k]} {str(v.get(target_k) or next(iter(v.values())))}"
                                for k, v in diffs.items()) + f" at K={target_k}.")
    checked = [k for k in target_kinds if k in diffs and target_k in diffs[k]]
    if checked:
        met = all(diffs[k][target_k].meets() for k in checked)
        sentence += (f" Target ({TARGET_MARGIN} nats/token below each of "
                     f"{', '.join(descriptions[k] for k in checked)} at K={target_k}, beyond 2 SE): "
                     f"{'met' if met else 'not met'}.")
    return sentence
