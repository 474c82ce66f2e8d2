"""The comparison's results.md, summary.json and plots, written from what the run folders hold (so far).

results.md: the command, machine, date and wall times; with several seeds or with controls, a
summary (each run's held-out number, mean ± sd over seeds), each run's difference from each of its
controls at each K with its standard error, and a verdict sentence per run (`ltm.eval.seed_stats`);
then one row per run and seed (family, parameters, training FLOPs, training wall time, each
held-out number under its protocol's heading, the fresh-noise bound against K), the latent-use
table, and the protocols' labels. summary.json holds the same numbers for other tools (the scale
trend, `ltm.eval.trend`). Plots (matplotlib, Agg): the validation bound logged during training
against training tokens and against training FLOPs, and the held-out bound against K (exact-NLL
runs as horizontal dashed lines; means with the seeds' spread as error bars); on a reasoning task
also accuracy against FLOPs per answer (`ltm.eval.task_results`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import torch

from ltm.core.hardware import cpu_model
from ltm.eval.comparison_summary import collect, differences, format_controls, format_summary, write_summary
from ltm.eval.exact import EXACT_LABEL
from ltm.eval.task_results import format_task_means, task_means, write_task_plot
from ltm.inference.bound_results import ELBO_LABEL, IWAE_LABEL, PREFIX_LABEL
from ltm.training.metrics import METRICS_FILE

RESULTS_FILE = "results.md"
PLOTS = {"tokens": "val_bound_vs_tokens.png", "flops": "val_bound_vs_flops.png",
         "k": "eval_bound_vs_k.png"}
NONE = "—"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, neg_elbo) of each validation record in the run's metrics.jsonl."""
    try:
        lines = (run_dir / METRICS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    records = [json.loads(line) for line in lines if line.strip()]
    return [(r["step"], r["neg_elbo"]) for r in records if r.get("split") == "val" and "neg_elbo" in r]


def _train_seconds(cost: dict) -> float:
    return sum(s["seconds"] for s in cost.get("train_segments", []))


def _row(name: str, cost: dict, report: dict | None, k: int) -> list[str]:
    wall = _train_seconds(cost)
    head = [name, cost.get("model", "?"), f"{cost['params'] / 1e6:.3f}M",
            f"{cost['training_flops']:.3g}", f"{wall:.1f} s" if wall else NONE]
    if report is None:
        return head + ["(not scored yet)"] + [NONE] * 4
    if report["exact"]:
        return head + [f"{report['exact_nll']['nll']:.4f} (exact NLL)"] + [NONE] * 4
    at_k = next((b for b in report["fresh_noise_elbo"] if b["inner_steps"] == k), None)
    at_k = (f"{at_k['neg_elbo']:.4f} ({at_k['reconstruction']:.4f} + {at_k['kl']:.4f})" if at_k
            else NONE)
    curve = ", ".join(f"K={b['inner_steps']}: {b['neg_elbo']:.4f}" for b in report["fresh_noise_elbo"])
    return head + [NONE, at_k, f"{report['importance_weighted']['nll_bound']:.4f}",
                   f"{report['prefix_predictive']['nll']:.4f}", curve]


def format_table(comp, costs: dict, reports: dict) -> str:
    """One row per run and seed (the instance's folder names it)."""
    s, k = comp.eval, comp.eval.protocol_steps
    prefix = s.prefix_len or (comp.runs[0].config.data.block_size + 1) // 2
    header = ["run", "family", "params", "training FLOPs", "training wall time",
              "exact NLL (deterministic families)", f"fresh-noise ELBO bound, K={k} (recon + KL)",
              f"importance-weighted bound, K={k}, S={s.iwae_samples}",
              f"prefix-predictive NLL, K={k}, P={prefix}", "fresh-noise ELBO bound by K"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for inst in comp.instances():
        row = _row(inst.key, costs[inst.key], reports.get(inst.key), k)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_latent_table(comp, reports: dict) -> str:
    """Latent use of each stochastic run at each K: the bound, its gap to a long fit, active units,
    mutual information and the KL of each latent vector (nats per sequence)."""
    header = ["run", "K", "fresh-noise -ELBO", "gap to long fit", "active units",
              "mutual information (nats)", "KL per latent vector (nats/seq)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for inst in comp.instances():
        report = reports.get(inst.key)
        if not report or report["exact"]:
            continue
        long = report.get("long_fit")
        for bound, diag in zip(report["fresh_noise_elbo"], report.get("diagnostics") or
                               [None] * len(report["fresh_noise_elbo"]), strict=True):
            gap = f"{bound['neg_elbo'] - long['neg_elbo']:+.4f}" if long else NONE
            au = f"{diag['active_units']}/{diag['units']}" if diag else NONE
            mi = f"{diag['mutual_info']:.3f}" if diag else NONE
            kl = (" ".join(f"{v:.2f}" for v in diag["kl_per_latent"])
                  if diag and diag["kl_per_latent"] is not None else NONE)
            lines.append(f"| {inst.key} | {bound['inner_steps']} | {bound['neg_elbo']:.4f} | {gap} | "
                         f"{au} | {mi} | {kl} |")
    if len(lines) == 2:
        return ""
    long_steps = comp.eval.long_fit
    note = (f"Gap: the K-step bound minus the bound of a {long_steps}-step fit. " if long_steps else "")
    return ("Latent use (q fitted with K inner steps on the held-out blocks):\n\n" + "\n".join(lines)
            + f"\n\n{note}Active units: coordinates with Cov_x(E_q[z]) > 0.01 (Burda et al. 2016); "
            "mutual information: I(x; z) under the aggregate posterior (Hoffman & Johnson 2016), at "
            "most log(held-out sequences).\n")


def format_task_table(comp, costs: dict, reports: dict) -> str:
    """Greedy accuracy on the reasoning task by difficulty, with the tokens and FLOPs one answer
    costs, one row per run and seed (empty when the comparison scores no task)."""
    if not comp.eval.task:
        return ""
    levels = comp.eval.task["difficulties"]
    header = ["run", "family", "params", *[f"accuracy at {d}" for d in levels], "answer NLL (last)",
              "tokens per answer (last)", "GFLOP per answer (last)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for inst in comp.instances():
        rows = (reports.get(inst.key) or {}).get("reasoning")
        if not rows:
            continue
        cost = costs[inst.key]
        last = rows[-1]
        cells = [inst.key, cost["model"], f"{cost['params'] / 1e6:.3f}M",
                 *[f"{r['accuracy']:.3f}" for r in rows], f"{last['answer_nll']:.3f}",
                 f"{last['tokens_per_answer']:.1f}", f"{last['flops_per_answer'] / 1e9:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    examples = comp.eval.task.get("examples", 100)
    return (f"Reasoning: greedy exact-match accuracy on {examples} test questions per difficulty (disjoint "
            f"from every training question); tokens and FLOPs (counted) of one answer at the last "
            f"difficulty:\n\n" + "\n".join(lines) + "\n")


def write_report(comp, costs: dict, command: str, sessions: list[dict]) -> Path:
    """Write results.md and the plots into comp.out_dir; returns results.md's path.

    Args:
        sessions: Every invocation so far, oldest first, each {"date", "command", "seconds"}.
    """
    cfg = comp.runs[0].config
    comp.out_dir.mkdir(parents=True, exist_ok=True)
    instances = comp.instances()
    reports = {i.key: r for i in instances if (r := _read(i.dir / "eval.json"))}
    compute = sum(_train_seconds(costs[i.key]) + reports.get(i.key, {}).get("eval_seconds", 0.0)
                  for i in instances)
    scored = list(reports.values())
    values = collect(comp, reports)
    diffs = differences(comp, values)
    means = task_means(comp, reports) if comp.eval.task else {}
    write_summary(comp, costs, values, diffs, means)
    overview = []
    if comp.seeds > 1 or any(r.is_control for r in comp.runs):
        overview = [f"Over {comp.seeds} seed(s) ({', '.join(map(str, comp.seed_values()))}; each run and "
                    f"control trained once per seed, nothing else changed):", "",
                    format_summary(comp, costs, values), "", format_controls(comp, diffs), "",
                    *(["Reasoning accuracy, mean ± sd over seeds:", "", format_task_means(comp, means), ""]
                      if means else []),
                    "Each run and seed:", ""]
    data = scored[0]["data"] if scored else None
    sizes = sorted({r.config.data.block_size for r in comp.runs})
    blocks = (f"blocks of {sizes[0]} tokens, {cfg.max_steps} steps of {cfg.batch_size} blocks = "
              f"{cfg.batch_size * sizes[0] * cfg.max_steps:,} training tokens per run" if len(sizes) == 1
              else f"blocks of {sizes[0]} to {sizes[-1]} tokens (each run sizes its own: one padded "
              f"example per block), {cfg.max_steps} steps of {cfg.batch_size} blocks")
    lines = [
        f"# Comparison: {comp.name}", "",
        f"- command: `{command}`",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores ({platform.system()} {platform.machine()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} (started "
        f"{sessions[0]['date']})",
        f"- total wall time: {sum(s['seconds'] for s in sessions):.1f} s over {len(sessions)} "
        f"invocation(s) (this one {sessions[-1]['seconds']:.1f} s); training and scoring "
        f"{compute:.1f} s of it (summed over resumed segments)",
        f"- data: {cfg.data.dataset}, tokenizer {cfg.data.tokenizer} (vocabulary "
        f"{cfg.data.vocab_size}), {blocks}",
        f"- held-out scoring: validation split, {comp.eval.batches} batch(es)"
        + (f" = {data['blocks']} blocks, {data['tokens']} tokens" if data else "")
        + f", seed {comp.eval.seed}; nats per token; q fitted with "
        + (f"{comp.eval.inner_loop} in place of each run's own inner-loop settings"
           if comp.eval.inner_loop else "each run's own inner-loop settings"), "",
        f"{len(scored)} of {len(instances)} runs scored.", "",
        *overview,
        format_table(comp, costs, reports), "",
        format_latent_table(comp, reports),
        format_task_table(comp, costs, reports),
        "Protocols:",
        f"- {EXACT_LABEL}.",
        f"- {ELBO_LABEL}.",
        f"- {IWAE_LABEL}.",
        f"- {PREFIX_LABEL}; per continuation token (the last block tokens "
        f"after the prefix P), so it is not the same token set as the other columns.",
        "- training FLOPs: FLOPs of one measured training step (matrix multiplies and attention, "
        "forward + backward, inner loop included; torch.utils.flop_counter) x max_steps; with a "
        "curriculum (Coconut's stages), each stage's step, measured on its own blocks, x its steps.",
        "- run − control: the run's mean over seeds minus the control's, with the standard error "
        "sqrt(s_run^2/n + s_control^2/n) (Welch); 'beyond 2 SE' when |difference| > 2 SE. The "
        "held-out number is the exact NLL for deterministic families and the fresh-noise ELBO bound "
        "after a K-step fit for stochastic ones.", ""]
    plots = write_plots(comp, costs, values)
    if (task_plot := write_task_plot(comp, means, comp.out_dir)) is not None:
        plots.append(task_plot)
    lines += [f"![{name}]({name})" for name in plots]
    path = comp.out_dir / RESULTS_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The mean over seeds at the steps every seed's curve has."""
    common = set.intersection(*(set(s for s, _ in c) for c in curves)) if curves else set()
    return [(s, sum(dict(c)[s] for c in curves) / len(curves)) for s in sorted(common)]


def write_plots(comp, costs: dict, values: dict) -> list[str]:
    """The three PNGs (file names); none when matplotlib is not installed. With several seeds each
    curve is the seeds' mean, and the bound against K shows their standard deviation."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltm.eval.seed_stats import mean_sd

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {run.name: colors[i % len(colors)] for i, run in enumerate(comp.runs)}  # one per run
    instances = comp.instances()
    written = []
    for key, xlabel in (("tokens", "training tokens"), ("flops", "training FLOPs")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for run in comp.runs:
            mine = [i for i in instances if i.run is run]
            curve = _mean_curve([c for c in (val_curve(i.dir) for i in mine) if c])
            cost = costs[mine[0].key]
            per_step = cost["tokens_per_step"] if key == "tokens" else cost["flops_per_step"]
            if curve:
                ax.plot([s * per_step for s, _ in curve], [v for _, v in curve], marker="o",
                        color=color[run.name], label=f"{run.name} ({cost['model']})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation -ELBO, nats/token")
        ax.set_title("validation bound during training (exact NLL for deterministic families)"
                     + (f"; mean of {comp.seeds} seeds" if comp.seeds > 1 else ""), fontsize=8)
        written.append(_save(fig, ax, comp.out_dir / PLOTS[key]))
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted({int(k) for k in comp.eval.inner_steps})
    for run in comp.runs:
        by_k = {k: v for k, v in values[run.name].items() if v}
        if not by_k:
            continue
        stats = {k: mean_sd(v) for k, v in by_k.items()}
        if run.config.family.exact_nll:
            mean = next(iter(stats.values()))[0]
            ax.axhline(mean, linestyle="--", color=color[run.name], label=f"{run.name}: exact NLL")
        else:
            ax.errorbar(list(stats), [m for m, _ in stats.values()],
                        yerr=[sd or 0.0 for _, sd in stats.values()], marker="o", capsize=3,
                        color=color[run.name], label=f"{run.name}: fresh-noise ELBO bound")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(min(ks) - 0.1, max(ks) * 1.15 + 0.1)  # dashed exact-NLL lines span the budgets only
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("inner steps K at evaluation")
    ax.set_ylabel("held-out nats/token" + (f" (mean ± sd of {comp.seeds} seeds)" if comp.seeds > 1 else ""))
    written.append(_save(fig, ax, comp.out_dir / PLOTS["k"]))
    return written


def _save(fig, ax, path: Path) -> str:
    import matplotlib.pyplot as plt

    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
