"""A comparison's numbers over seeds and against its controls: tables for results.md, summary.json.

Each run's held-out number at budget K is its exact NLL (deterministic families, the same at every
K) or its fresh-noise ELBO bound after a K-step fit; over the seeds it is a mean ± sd, and a run's
difference from each control is a mean with its standard error (`ltm.eval.seed_stats`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ltm.eval.controls import DESCRIPTIONS
from ltm.eval.seed_stats import Difference, difference, format_mean_sd, mean_sd, verdict

SUMMARY_FILE = "summary.json"
CONTROL_WORDS = {"baseline": "the same-window vanilla", "params": "the parameter-matched vanilla",
                 "flops": "the FLOP-matched vanilla", "inference_flops": "the inference-FLOP-matched vanilla",
                 "fixed_latent": "its fixed-latent control"}
TARGET_KINDS = ("baseline", "params", "fixed_latent")  # the controls the target names


def value_at(report: dict, k: int) -> float:
    """The held-out number of one scored run at budget K (nats per token)."""
    if report["exact"]:
        return report["exact_nll"]["nll"]
    at = {b["inner_steps"]: b["neg_elbo"] for b in report["fresh_noise_elbo"]}
    return at[k]


def collect(comp, reports: dict[str, dict]) -> dict[str, dict[int, list[float]]]:
    """{run name: {K: [value per scored seed]}} from {instance key: eval.json}."""
    ks = sorted(set(comp.eval.inner_steps))
    values = {run.name: {k: [] for k in ks} for run in comp.runs}
    for inst in comp.instances():
        report = reports.get(inst.key)
        if report:
            for k in ks:
                values[inst.run.name][k].append(value_at(report, k))
    return values


def differences(comp, values) -> dict[str, dict[str, dict[int, Difference]]]:
    """{run: {control kind: {K: run minus control}}} for every run with scored controls."""
    out = {}
    for run in comp.base_runs():
        by_kind = {}
        for kind in run.controls:
            control = comp.control(run.name, kind)
            if control is None:
                continue
            by_k = {k: difference(values[run.name][k], values[control.name][k])
                    for k in values[run.name] if values[run.name][k] and values[control.name][k]}
            if by_k:
                by_kind[kind] = by_k
        out[run.name] = by_kind
    return out


def _role(run) -> str:
    """"run", or what the control is and whose: "vanilla, same decoder and window, of a, b"."""
    if not run.is_control:
        return "run"
    kinds = {}
    for base, kind in run.control_of:
        kinds.setdefault(kind, []).append(base)
    return "; ".join(f"{DESCRIPTIONS[kind]}, of {', '.join(bases)}" for kind, bases in kinds.items())


def format_summary(comp, costs: dict, values) -> str:
    """One row per run and control: role, shape, cost, the number at the protocol K (mean ± sd)."""
    k, n = comp.eval.protocol_steps, comp.seeds
    header = ["run", "role", "family", "params", "training FLOPs",
              f"held-out nats/token at K={k}, mean ± sd over seeds", "seeds scored", "means by K"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in comp.runs:
        cost = next((c for key, c in costs.items() if key.split("/")[0] == run.name), {})
        by_k = values[run.name]
        scored = len(by_k.get(k) or next(iter(by_k.values())))
        at = by_k.get(k) or []
        number = format_mean_sd(at) if at else "—"
        curve = ", ".join(f"K={kk}: {mean_sd(v)[0]:.4f}" for kk, v in by_k.items() if v)
        exact = run.config.family.exact_nll
        lines.append(f"| {run.name} | {_role(run)} | {run.config.model} | "
                     f"{cost.get('params', 0) / 1e6:.3f}M | {cost.get('training_flops', 0):.3g} | "
                     f"{number}{' (exact NLL)' if exact and at else ''} | {scored}/{n} | "
                     f"{'—' if exact else curve} |")
    return "\n".join(lines)


def format_controls(comp, diffs) -> str:
    """Per run: each control's shape and the run's difference from it at each K; the verdict."""
    blocks = []
    ks = sorted(set(comp.eval.inner_steps))
    for run in comp.base_runs():
        by_kind = diffs.get(run.name) or {}
        if not run.controls:
            continue
        header = ["control", "what it is", *[f"run − control, K={k}" for k in ks]]
        lines = [f"**{run.name}** against its controls (nats/token, mean difference ± standard "
                 f"error; negative: the run is better):", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for kind in run.controls:
            control = comp.control(run.name, kind)
            if control is None:
                continue
            sizing = control.sizing_for(run.name, kind)
            sized = sizing.describe() if sizing is not None else ""
            cells = [str(by_kind[kind][k]) if kind in by_kind and k in by_kind[kind] else "—" for k in ks]
            lines.append(f"| {control.name} | {DESCRIPTIONS[kind]}{'; ' + sized if sized else ''} | "
                         + " | ".join(cells) + " |")
        lines += ["", verdict(run.name, by_kind, CONTROL_WORDS, comp.eval.protocol_steps, TARGET_KINDS)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_summary(comp, costs: dict, values, diffs, task: dict | None = None) -> Path:
    """summary.json: every run's values by K and seed, cost and role; each run's differences; on a
    reasoning task, each run's accuracy by difficulty (mean over seeds, `task_results.task_means`)."""
    runs = {}
    for run in comp.runs:
        cost = next((c for key, c in costs.items() if key.split("/")[0] == run.name), {})
        runs[run.name] = {
            "model": run.config.model, "control_of": [list(p) for p in run.control_of],
            "sizing": run.sizing.to_dict() if run.sizing is not None else None,
            "sizing_by_role": {f"{r}/{k}": s.to_dict() for (r, k), s in run.role_sizings.items()
                               if s is not None},
            "d_model": run.config.d_model, "n_layer": run.config.n_layer,
            "params": cost.get("params"), "training_flops": cost.get("training_flops"),
            "values": {str(k): v for k, v in values[run.name].items()}}
    summary = {"name": comp.name, "seeds": comp.seed_values(), "protocol_steps": comp.eval.protocol_steps,
               "runs": runs, **({"task": {r: {str(d): e for d, e in by.items()} for r, by in task.items()}}
                                if task else {}),
               "differences": {r: {kind: {str(k): d.to_dict() for k, d in by_k.items()}
                                   for kind, by_k in by_kind.items()} for r, by_kind in diffs.items()},
               "verdicts": {r: verdict(r, by_kind, CONTROL_WORDS, comp.eval.protocol_steps, TARGET_KINDS)
                            for r, by_kind in diffs.items()
                            if next(x for x in comp.runs if x.name == r).controls}}
    path = comp.out_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
