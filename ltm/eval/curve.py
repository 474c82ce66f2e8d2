"""Every bound of `ltm.inference.bounds` against the inner-step budget K, as dicts and as a PNG."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ltm.inference.bounds import (
    default_prefix_len,
    fresh_noise_elbo,
    importance_weighted_bound,
    prefix_predictive_perplexity,
    published_protocol,
)
from ltm.inference.diagnostics import posterior_diagnostics
from ltm.inference.inner_loop import InnerLoopConfig

# --protocols name -> curve key, in the table's column order
PROTOCOL_KEYS = {"elbo": "fresh_noise_elbo", "iwae": "importance_weighted",
                 "prefix": "prefix_predictive", "published": "published_protocol"}
NEEDS_DENSITY = ("elbo", "iwae", "published")  # they need log q(z) (`LocalGuide.has_density`)

# (curve key, per-token number in its dict, legend)
CURVE_LINES = (
    ("fresh_noise_elbo", "neg_elbo", "fresh-noise -ELBO (bound)"),
    ("importance_weighted", "nll_bound", "importance-weighted (bound)"),
    ("prefix_predictive", "nll", "prefix-predictive NLL (continuation)"),
    ("published_protocol", "neg_elbo", "published protocol (same noise; not a bound)"),
)


def default_protocols(guide) -> list[str]:
    """Every protocol that applies to `guide`: all four, or only "prefix" for a guide without a
    tractable density (the others need log q(z))."""
    return [n for n in PROTOCOL_KEYS if guide.has_density or n not in NEEDS_DENSITY]


def bounds_vs_inner_steps(model, guide, batches, budgets=(0, 1, 4, 16), num_samples: int = 8,
                          inner: InnerLoopConfig | None = None, prefix_len: int | None = None,
                          num_draws: int = 1, seed: int = 0, diagnostics: bool = False,
                          protocols=None) -> list[dict]:
    """Every bound at each inner-step budget K.

    Args:
        batches: Blocks (B, T+1), or a list of them.
        budgets: Inner-step budgets K; `inner` (default `InnerLoopConfig()`) with steps=K.
        num_samples: S for the importance-weighted bound and the prefix-predictive NLL.
        prefix_len: Prefix P for the prefix-predictive NLL (default: half the block length).
        diagnostics: Also give each K's posterior diagnostics (`ltm.inference.diagnostics`: KL per
            latent vector, active units, mutual information) under "diagnostics" (None for a
            family without a stochastic latent, or a guide without a density).
        protocols: Names of `PROTOCOL_KEYS` to score (default: `default_protocols(guide)`).

    Returns:
        One JSON-ready dict per K: {"inner_steps": K, "fresh_noise_elbo": {...},
        "importance_weighted": {...}, "prefix_predictive": {...}, "published_protocol": {...}}
        (the requested ones), each inner dict the `to_dict()` of that bound (with its `label`,
        nats per token, counts).
    """
    inner = inner or InnerLoopConfig()
    protocols = default_protocols(guide) if protocols is None else list(protocols)
    first = batches if hasattr(batches, "shape") else batches[0]
    prefix_len = prefix_len or default_prefix_len(first.shape[1])
    score = {
        "elbo": lambda cfg: fresh_noise_elbo(model, guide, batches, cfg, num_draws, seed),
        "iwae": lambda cfg: importance_weighted_bound(model, guide, batches, cfg, num_samples, seed),
        "prefix": lambda cfg: prefix_predictive_perplexity(model, guide, batches, prefix_len, cfg,
                                                           num_samples, seed),
        "published": lambda cfg: published_protocol(model, guide, batches, cfg, seed),
    }
    curve = []
    for k in budgets:
        cfg = replace(inner, steps=int(k))
        row = {"inner_steps": int(k)}
        row.update({PROTOCOL_KEYS[n]: score[n](cfg).to_dict() for n in PROTOCOL_KEYS if n in protocols})
        if diagnostics:
            found = posterior_diagnostics(model, guide, batches, cfg, seed)  # None: nothing to diagnose
            row["diagnostics"] = None if found is None else found.to_dict()
        curve.append(row)
    return curve


def plot_curve(curve: list[dict], path: str | Path) -> Path:
    """Write a PNG of each bound (nats/token) against K; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ks = [row["inner_steps"] for row in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, field, legend in CURVE_LINES:
        if all(key in row for row in curve):
            ax.plot(ks, [row[key][field] for row in curve], marker="o", label=legend)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("inner steps K")
    ax.set_ylabel("nats per token")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
