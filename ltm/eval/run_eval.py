"""Score one finished run of a comparison on the held-out split: `evaluate_run(run_dir, settings)`.

A family whose NLL is exact (no stochastic thought) gets one number, its exact NLL per token,
computed once per batch (`ltm.eval.exact`). A stochastic family gets the fresh-noise ELBO bound
(reconstruction, KL, total) and the posterior diagnostics (KL per latent vector, active units,
mutual information; `ltm.inference.diagnostics`) at each budget K of `settings.inner_steps`, the
gap of each K to a long fit (`settings.long_fit`), and, at K = `settings.protocol_steps`, the
importance-weighted bound and the prefix-predictive NLL (`ltm.inference.bounds`). Every number is
labelled with its protocol.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from types import SimpleNamespace

from ltm.core.loss_mask import scored_targets
from ltm.eval.exact import exact_scores
from ltm.eval.held_out import held_out_blocks
from ltm.eval.reasoning_tasks import score_tasks, task_plan
from ltm.inference.bounds import (
    default_prefix_len,
    fresh_noise_elbo,
    importance_weighted_bound,
    prefix_predictive_perplexity,
)
from ltm.inference.diagnostics import posterior_diagnostics
from ltm.training.checkpoint import load_checkpoint, load_guide, read_manifest, resolve_checkpoint


def _score_task(model, tokenizer, config, settings, step: int) -> list[dict]:
    """Greedy accuracy, answer NLL, tokens and FLOPs per answer at each difficulty of `settings.task`."""
    args = SimpleNamespace(task="run", task_examples=settings.task.get("examples", 100),
                           difficulties=",".join(map(str, settings.task["difficulties"])))
    plan = task_plan(args, config.data.dataset, config.data.block_size)
    return score_tasks(model, tokenizer, plan, settings.inner(config, settings.protocol_steps),
                       seed=settings.seed, step=step, log=lambda *_: None)


def evaluate_run(run_dir: str | Path, settings, trust_code: bool | Collection[str] = False) -> dict:
    """The held-out numbers of the run's latest checkpoint, JSON-ready.

    Args:
        run_dir: A run directory (its latest checkpoint is scored) or a step directory.
        settings: An `ltm.eval.comparison.EvalSettings`.
        trust_code: The `module:Class` paths its config may name (see `load_checkpoint`).

    Returns:
        {"checkpoint", "step", "model", "exact", "settings", "data": {"blocks", "tokens"}} and either
        "exact_nll" (exact families) or "fresh_noise_elbo" (one `ElboBound.to_dict()` per K),
        "importance_weighted" and "prefix_predictive" (at K = protocol_steps); with `settings.task`,
        "reasoning" (one row per difficulty, `ltm.eval.reasoning_tasks`). More entries
        (posterior diagnostics, ...) may be added to this dict by later code.
    """
    step_dir = resolve_checkpoint(run_dir)
    model, tokenizer, config = load_checkpoint(step_dir, trust_code=trust_code)
    guide = load_guide(step_dir, model=model, trust_code=trust_code)
    blocks = held_out_blocks(config, tokenizer)
    batches = blocks.fixed_batches(settings.batch_size or config.batch_size, settings.batches)
    seed, exact = settings.seed, bool(model.exact_nll)
    report = {"checkpoint": str(step_dir), "step": int(read_manifest(step_dir)["step"]),
              "model": config.model, "exact": exact, "settings": settings.to_dict(),
              "data": {"dataset": config.data.dataset, "split": "val",
                       "blocks": sum(b.shape[0] for b in batches),
                       "tokens": sum(int(scored_targets(b).sum()) for b in batches)}}
    prefix = settings.prefix_len or default_prefix_len(batches[0].shape[1])
    if settings.task:
        report["reasoning"] = _score_task(model, tokenizer, config, settings, report["step"])
    if exact:
        report["exact_nll"] = exact_scores(model, batches, prefix, seed)
        return report
    report["fresh_noise_elbo"] = [
        fresh_noise_elbo(model, guide, batches, settings.inner(config, k), seed=seed).to_dict()
        for k in settings.inner_steps]
    found = [posterior_diagnostics(model, guide, batches, settings.inner(config, k), seed)
             for k in settings.inner_steps]
    report["diagnostics"] = [None if d is None else d.to_dict() for d in found]
    if settings.long_fit:
        long = fresh_noise_elbo(model, guide, batches, settings.inner(config, settings.long_fit), seed=seed)
        report["long_fit"] = long.to_dict()
    k, samples = settings.protocol_steps, settings.iwae_samples
    report["importance_weighted"] = importance_weighted_bound(
        model, guide, batches, settings.inner(config, k), samples, seed).to_dict()
    report["prefix_predictive"] = prefix_predictive_perplexity(
        model, guide, batches, prefix, settings.inner(config, k), samples, seed).to_dict()
    return report
