"""The scale trend: one run's gap to each of its controls across comparisons at several sizes.

Reads the summary.json of each finished comparison (`ltm.eval.comparison_summary`), takes the
named run's difference from each control at the protocol's K, and writes trend.md (a table, sizes
in order of the run's parameters) and trend.png (the gap against parameters, with 2 SE bars).

    python -m ltm.compare --trend runs/compare/controls_scale_d64 runs/compare/controls_enwiki \\
        --run ltm-warmup --out-dir results/compare/scale_trend
"""

from __future__ import annotations

import json
from pathlib import Path

from ltm.core.errors import DataError, MissingFileError
from ltm.eval.comparison_summary import CONTROL_WORDS, SUMMARY_FILE

TREND_FILE, TREND_PLOT = "trend.md", "trend.png"


def _read(folder: Path) -> dict:
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; run that comparison first (python -m ltm.compare "
                               f"--config ...), or name its output folder.")
    return json.loads(path.read_text())


def trend_points(folders: list[Path], run: str) -> list[dict]:
    """One point per comparison: the run's size and its difference from each control at K.

    Raises:
        DataError: a comparison without the run, or without differences for it yet.
    """
    points = []
    for folder in folders:
        summary = _read(folder)
        if run not in summary["runs"]:
            raise DataError(f"comparison {folder} has no run '{run}' (it has {', '.join(summary['runs'])}).")
        diffs = summary["differences"].get(run) or {}
        k = str(summary["protocol_steps"])
        gaps = {kind: by_k[k] for kind, by_k in diffs.items() if k in by_k}
        if not gaps:
            raise DataError(f"comparison {folder}: run '{run}' has no scored controls yet.")
        info = summary["runs"][run]
        points.append({"comparison": summary["name"], "folder": str(folder), "k": int(k),
                       "params": info["params"], "d_model": info["d_model"], "n_layer": info["n_layer"],
                       "seeds": len(summary["seeds"]), "gaps": gaps})
    return sorted(points, key=lambda p: p["params"])


def direction(points: list[dict], kind: str) -> str:
    """Which way the gap to `kind` moves from the smallest size to the largest, in words."""
    have = [p["gaps"][kind]["mean"] for p in points if kind in p["gaps"]]
    if len(have) < 2:
        return "one size only"
    change = have[-1] - have[0]
    word = "shrinks" if abs(have[-1]) < abs(have[0]) else "grows"
    side = "in the run's favour" if have[-1] < 0 else "against the run"
    return f"{word} from {have[0]:+.4f} to {have[-1]:+.4f} ({change:+.4f}; {side} at the largest size)"


def write_trend(folders: list[Path], run: str, out_dir: Path) -> Path:
    """trend.md and trend.png in `out_dir`; returns trend.md's path."""
    points = trend_points(folders, run)
    kinds = sorted({kind for p in points for kind in p["gaps"]}, key=list(CONTROL_WORDS).index)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["comparison", "d_model / layers", "params", "seeds",
              *[f"{run} − {CONTROL_WORDS[k].removeprefix('the ').removeprefix('its ')}" for k in kinds]]
    lines = [f"# Scale trend of {run}", "",
             f"Held-out nats/token at K={points[0]['k']}: the run's mean over seeds minus each "
             f"control's, ± standard error (negative: the run is better).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        cells = [_cell(p["gaps"].get(k)) for k in kinds]
        lines.append(f"| {p['comparison']} | {p['d_model']} / {p['n_layer']} | {p['params'] / 1e6:.3f}M | "
                     f"{p['seeds']} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- Against {CONTROL_WORDS[k]}: the gap {direction(points, k)}." for k in kinds]]
    if _plot(points, kinds, run, out_dir / TREND_PLOT):
        lines += ["", f"![gap against size]({TREND_PLOT})"]
    path = out_dir / TREND_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(gap: dict | None) -> str:
    if gap is None:
        return "—"
    se = "" if gap["se"] is None else f" ± {gap['se']:.4f}"
    return f"{gap['mean']:+.4f}{se}{' *' if gap['beyond_2se'] else ''}"


def _plot(points: list[dict], kinds: list[str], run: str, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in kinds:
        have = [p for p in points if kind in p["gaps"]]
        ax.errorbar([p["params"] for p in have], [p["gaps"][kind]["mean"] for p in have],
                    yerr=[2 * (p["gaps"][kind]["se"] or 0.0) for p in have], marker="o", capsize=3,
                    label=CONTROL_WORDS[kind])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"parameters of {run}")
    ax.set_ylabel(f"{run} − control, nats/token (± 2 SE)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
