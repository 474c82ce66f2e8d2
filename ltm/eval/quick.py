"""`python -m ltm.compare --quick`: any comparison shrunk to a first look in a few minutes.

The same runs, controls and data at a tiny size: widths a quarter (in steps the head count
allows), at most two layers, blocks of 32 tokens (windows scaled with them), 12 training steps of
8 blocks, a vocabulary of 512, the first 40 documents, 2 seeds, and held-out scoring on one
batch at K = 0 and 4. Its numbers say that everything runs, not which run wins. It writes to
OUT_DIR-quick, never over the full comparison.
"""

from __future__ import annotations

import copy

QUICK_BLOCK, QUICK_STEPS = 32, 12
QUICK_COMMON = dict(vocab_size=512, block_size=QUICK_BLOCK, batch_size=8, max_steps=QUICK_STEPS,
                    warmup_steps=2, eval_every=QUICK_STEPS, save_every=QUICK_STEPS, eval_batches=1,
                    max_documents=40, keep_last=1)
QUICK_EVAL = dict(inner_steps=[0, 4], batches=1, iwae_samples=2, protocol_steps=4, long_fit=None)


def _shrink(values: dict, block_size: int, max_steps: int, n_head: int) -> None:
    """Scale one run's (or common's) sizes in place."""
    heads = values.get("n_head", n_head)
    step = 2 * heads
    if "d_model" in values:
        values["d_model"] = max(2 * step, values["d_model"] // 4 // step * step)
    if "d_ff" in values and values["d_ff"]:
        values["d_ff"] = max(16, values["d_ff"] // 4)
    if "n_layer" in values:
        values["n_layer"] = min(values["n_layer"], 2)
    if values.get("window"):
        values["window"] = max(2, values["window"] * QUICK_BLOCK // block_size)
    for key in ("kl_warmup_steps", "early_inference_steps", "lr_decay_steps"):
        if values.get(key):
            values[key] = max(1, values[key] * QUICK_STEPS // max_steps)
    ltm = values.get("ltm")
    if isinstance(ltm, dict):
        if ltm.get("d_latent"):
            ltm["d_latent"] = max(4, ltm["d_latent"] // 4)
        if ltm.get("n_latent"):
            ltm["n_latent"] = 2 * max(1, min(ltm["n_latent"], 8) // 2)  # splits over 1 or 2 layers


def quick_comparison(data: dict) -> dict:
    """A copy of a comparison's mapping (as read from its YAML) shrunk as the module says."""
    data = copy.deepcopy(data)
    common = dict(data.get("common") or {})
    block, steps, heads = common.get("block_size", 128), common.get("max_steps", 500), common.get("n_head", 4)
    common.setdefault("n_layer", 2)
    common.setdefault("d_model", 128)
    _shrink(common, block, steps, heads)
    common.update(QUICK_COMMON)
    data["common"] = common
    for run in data.get("runs") or []:
        if isinstance(run, dict):
            _shrink(run, block, steps, heads)
    data["eval"] = {**(data.get("eval") or {}), **QUICK_EVAL}
    data["seeds"] = 2
    name = str(data.get("name") or "comparison")
    data["name"] = f"{name}-quick"
    if data.get("out_dir"):
        data["out_dir"] = f"{data['out_dir']}-quick"
    return data
