"""The comparison's results.md and plots, written from what the run folders hold (so far).

results.md: the command, machine, date and wall times, then one row per run (family, parameters,
training FLOPs, training wall time, each held-out number under its protocol's heading, the
fresh-noise bound against K), then the protocols' labels. Plots (matplotlib, Agg): the validation
bound logged during training against training tokens and against training FLOPs, and the held-out
bound against K (exact-NLL runs as horizontal dashed lines).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import torch

from ltm.eval.exact import EXACT_LABEL
from ltm.inference.bound_results import ELBO_LABEL, IWAE_LABEL, PREFIX_LABEL
from ltm.training.metrics import METRICS_FILE

RESULTS_FILE = "results.md"
PLOTS = {"tokens": "val_bound_vs_tokens.png", "flops": "val_bound_vs_flops.png",
         "k": "eval_bound_vs_k.png"}
NONE = "—"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


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


def format_table(comp, costs: dict) -> str:
    s, k = comp.eval, comp.eval.protocol_steps
    prefix = s.prefix_len or (comp.runs[0].config.block_size + 1) // 2
    header = ["run", "family", "params", "training FLOPs", "training wall time",
              "exact NLL (deterministic families)", f"fresh-noise ELBO bound, K={k} (recon + KL)",
              f"importance-weighted bound, K={k}, S={s.iwae_samples}",
              f"prefix-predictive NLL, K={k}, P={prefix}", "fresh-noise ELBO bound by K"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in comp.runs:
        report = _read(comp.run_dir(run) / "eval.json")
        lines.append("| " + " | ".join(_row(run.name, costs[run.name], report, k)) + " |")
    return "\n".join(lines)


def format_latent_table(comp) -> str:
    """Latent use of each stochastic run at each K: the bound, its gap to a long fit, active units,
    mutual information and the KL of each latent vector (nats per sequence)."""
    header = ["run", "K", "fresh-noise -ELBO", "gap to long fit", "active units",
              "mutual information (nats)", "KL per latent vector (nats/seq)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in comp.runs:
        report = _read(comp.run_dir(run) / "eval.json")
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
            lines.append(f"| {run.name} | {bound['inner_steps']} | {bound['neg_elbo']:.4f} | {gap} | "
                         f"{au} | {mi} | {kl} |")
    if len(lines) == 2:
        return ""
    long_steps = comp.eval.long_fit
    note = (f"Gap: the K-step bound minus the bound of a {long_steps}-step fit. " if long_steps else "")
    return ("Latent use (q fitted with K inner steps on the held-out blocks):\n\n" + "\n".join(lines)
            + f"\n\n{note}Active units: coordinates with Cov_x(E_q[z]) > 0.01 (Burda et al. 2016); "
            "mutual information: I(x; z) under the aggregate posterior (Hoffman & Johnson 2016), at "
            "most log(held-out sequences).\n")


def write_report(comp, costs: dict, command: str, sessions: list[dict]) -> Path:
    """Write results.md and the plots into comp.out_dir; returns results.md's path.

    Args:
        sessions: Every invocation so far, oldest first, each {"date", "command", "seconds"}.
    """
    cfg = comp.runs[0].config
    comp.out_dir.mkdir(parents=True, exist_ok=True)
    reports = [_read(comp.run_dir(r) / "eval.json") for r in comp.runs]
    compute = sum(_train_seconds(costs[r.name]) + (rep or {}).get("eval_seconds", 0.0)
                  for r, rep in zip(comp.runs, reports, strict=True))
    scored = [rep for rep in reports if rep]
    data = scored[0]["data"] if scored else None
    tokens = cfg.batch_size * cfg.block_size * cfg.max_steps
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
        f"- data: {cfg.dataset}, tokenizer {cfg.tokenizer} (vocabulary {cfg.vocab_size}), blocks of "
        f"{cfg.block_size} tokens, {cfg.max_steps} steps of {cfg.batch_size} blocks = {tokens:,} "
        f"training tokens per run",
        f"- held-out scoring: validation split, {comp.eval.batches} batch(es)"
        + (f" = {data['blocks']} blocks, {data['tokens']} tokens" if data else "")
        + f", seed {comp.eval.seed}; nats per token; q fitted with "
        + (f"{comp.eval.inner_loop} in place of each run's own inner-loop settings"
           if comp.eval.inner_loop else "each run's own inner-loop settings"), "",
        f"{len(scored)} of {len(comp.runs)} runs scored.", "",
        format_table(comp, costs), "",
        format_latent_table(comp),
        "Protocols:",
        f"- {EXACT_LABEL}.",
        f"- {ELBO_LABEL}.",
        f"- {IWAE_LABEL}.",
        f"- {PREFIX_LABEL}; per continuation token (the last block tokens "
        f"after the prefix P), so it is not the same token set as the other columns.",
        "- training FLOPs: FLOPs of one measured training step (matrix multiplies and attention, "
        "forward + backward, inner loop included; torch.utils.flop_counter) x max_steps.", ""]
    plots = write_plots(comp, costs, reports)
    lines += [f"![{name}]({name})" for name in plots]
    path = comp.out_dir / RESULTS_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plots(comp, costs: dict, reports: list) -> list[str]:
    """The three PNGs (file names); none when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {run.name: colors[i % len(colors)] for i, run in enumerate(comp.runs)}  # one per run
    written = []
    for key, xlabel in (("tokens", "training tokens"), ("flops", "training FLOPs")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for run in comp.runs:
            cost, curve = costs[run.name], val_curve(comp.run_dir(run))
            per_step = cost["tokens_per_step"] if key == "tokens" else cost["flops_per_step"]
            if curve:
                ax.plot([s * per_step for s, _ in curve], [v for _, v in curve], marker="o",
                        color=color[run.name], label=f"{run.name} ({cost['model']})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation -ELBO, nats/token")
        ax.set_title("validation bound during training (exact NLL for deterministic families)",
                     fontsize=8)
        written.append(_save(fig, ax, comp.out_dir / PLOTS[key]))
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted({int(k) for k in comp.eval.inner_steps})
    for run, report in zip(comp.runs, reports, strict=True):
        if report is None:
            continue
        if report["exact"]:
            ax.axhline(report["exact_nll"]["nll"], linestyle="--", color=color[run.name],
                       label=f"{run.name}: exact NLL")
        else:
            curve = report["fresh_noise_elbo"]
            ax.plot([b["inner_steps"] for b in curve], [b["neg_elbo"] for b in curve], marker="o",
                    color=color[run.name], label=f"{run.name}: fresh-noise ELBO bound")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(min(ks) - 0.1, max(ks) * 1.15 + 0.1)  # dashed exact-NLL lines span the budgets only
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("inner steps K at evaluation")
    ax.set_ylabel("held-out nats/token")
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
