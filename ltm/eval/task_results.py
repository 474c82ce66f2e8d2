"""A comparison's reasoning-task results over seeds: the means, their summary entry and the plot of
accuracy against compute (one panel per difficulty; x = counted FLOPs of one greedy answer)."""

from __future__ import annotations

from pathlib import Path

from ltm.eval.seed_stats import mean_sd

TASK_PLOT = "accuracy_vs_compute.png"


def task_means(comp, reports: dict) -> dict[str, dict[int, dict]]:
    """Each run's reasoning scores by difficulty, averaged over the seeds scored so far.

    Returns:
        {run name: {difficulty: {"accuracy", "accuracy_sd", "seeds", "answer_nll",
        "tokens_per_answer", "flops_per_answer"}}}; a run with no scored seed is left out.
    """
    out = {}
    for run in comp.runs:
        scored = [rows for i in comp.instances() if i.run is run
                  and (rows := (reports.get(i.key) or {}).get("reasoning"))]
        if not scored:
            continue
        by_level = {}
        for j, first in enumerate(scored[0]):
            acc_mean, acc_sd = mean_sd([rows[j]["accuracy"] for rows in scored])
            by_level[int(first["difficulty"])] = {
                "accuracy": acc_mean, "accuracy_sd": acc_sd, "seeds": len(scored),
                **{k: sum(rows[j][k] for rows in scored) / len(scored)
                   for k in ("answer_nll", "tokens_per_answer", "flops_per_answer")}}
        out[run.name] = by_level
    return out


def format_task_means(comp, means: dict) -> str:
    """The seeds' mean accuracy (± sd) by difficulty, one row per run."""
    levels = comp.eval.task["difficulties"]
    header = ["run", *[f"accuracy at {d}" for d in levels], "tokens per answer (last)",
              "GFLOP per answer (last)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_level in means.items():
        last = by_level[levels[-1]]
        cells = [name, *[_mean_cell(by_level[d]) for d in levels], f"{last['tokens_per_answer']:.1f}",
                 f"{last['flops_per_answer'] / 1e9:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_cell(entry: dict) -> str:
    if entry["seeds"] < 2 or entry["accuracy_sd"] is None:
        return f"{entry['accuracy']:.3f}"
    return f"{entry['accuracy']:.3f} ± {entry['accuracy_sd']:.3f}"


def _knob(comp) -> str:
    from ltm.data.reasoning import task_from_spec

    return task_from_spec(comp.runs[0].config.data.dataset).knob


def _few_log_ticks(ax, values: list[float]) -> None:
    """Four labelled ticks spread geometrically over `values` on a log axis (matplotlib's own crowd
    or vanish when the values span less than a decade)."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, NullLocator

    low, high = min(values), max(values)
    ticks = np.geomspace(low, high, 4) if high > low * 1.01 else np.array([low])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.2g}" for t in ticks], fontsize=8)


def write_task_plot(comp, means: dict, out_dir: Path) -> str | None:
    """Accuracy against GFLOP per answer, one panel per difficulty and one marker per run (the seeds'
    mean, their sd as an error bar); the file name, or None without matplotlib or scores."""
    if not means:
        return None
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = comp.eval.task["difficulties"]
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.8), sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, level in zip(axes[0], levels, strict=True):
        for i, (name, by_level) in enumerate(means.items()):
            entry = by_level[level]
            ax.errorbar([entry["flops_per_answer"] / 1e9], [entry["accuracy"]],
                        yerr=[entry["accuracy_sd"] or 0.0], marker="o", capsize=3,
                        color=colors[i % len(colors)], label=name)
        ax.set_xscale("log")
        _few_log_ticks(ax, [by_level[level]["flops_per_answer"] / 1e9 for by_level in means.values()])
        ax.set_xlabel("GFLOP per greedy answer (counted)")
        ax.set_title(f"{_knob(comp)}={level}", fontsize=9)
        ax.grid(alpha=0.3)
    seeds = f" (mean of {comp.seeds} seeds)" if comp.seeds > 1 else ""
    axes[0][0].set_ylabel("exact-match accuracy" + seeds)
    axes[0][0].set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{comp.name}: accuracy against compute per answer", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / TASK_PLOT, dpi=100)
    plt.close(fig)
    return TASK_PLOT
