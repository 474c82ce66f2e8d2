"""`python -m ltm.compare --quick`: any comparison shrunk to a first look in a few minutes.

The same runs, controls and data at a tiny size: widths a quarter (in steps the head count
allows), at most two layers, blocks of 32 tokens (windows scaled with them), 12 training steps of
8 blocks, a vocabulary of 512, the first 40 documents, 2 seeds, and held-out scoring on one
batch at K = 0 and 4 (a reasoning task keeps its blocks and vocabulary, and is scored on 8
questions per difficulty). Its numbers say that everything runs, not which run wins. It writes to
OUT_DIR-quick, never over the full comparison.
"""

from __future__ import annotations

import copy

from ltm.training.config import ALIASES, COMPONENTS

QUICK_BLOCK, QUICK_STEPS = 32, 12
QUICK_COMMON = dict(batch_size=8, max_steps=QUICK_STEPS, eval_every=QUICK_STEPS, save_every=QUICK_STEPS,
                    eval_batches=1, keep_last=1)
QUICK_DATA = dict(vocab_size=512, block_size=QUICK_BLOCK, max_documents=40)
QUICK_EVAL = dict(inner_steps=[0, 4], batches=1, iwae_samples=2, protocol_steps=4, long_fit=None)


def nested(values: dict) -> dict:
    """`values` (a run's or common's config mapping) with flat aliases moved into their sections
    (`block_size` -> `data: {block_size}`), values as given."""
    out: dict = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in ALIASES:
            section, option = ALIASES[name].split(".")
            out.setdefault(section, {})[option] = value
        elif name in COMPONENTS and isinstance(value, dict):
            out.setdefault(name, {}).update(value)
        else:
            out[name] = value
    return out


def _scaled(section: dict, key: str, max_steps: int) -> None:
    if section.get(key):
        section[key] = max(1, section[key] * QUICK_STEPS // max_steps)


def _shrink(values: dict, block_size: int, max_steps: int, n_head: int) -> None:
    """Scale one run's (or common's) sizes in place (`values` nested)."""
    step = 2 * values.get("n_head", n_head)
    if "d_model" in values:
        values["d_model"] = max(2 * step, values["d_model"] // 4 // step * step)
    if values.get("d_ff"):
        values["d_ff"] = max(16, values["d_ff"] // 4)
    if "n_layer" in values:
        values["n_layer"] = min(values["n_layer"], 2)
    if values.get("window"):
        values["window"] = max(2, values["window"] * QUICK_BLOCK // block_size)
    _scaled(values.get("kl", {}), "warmup_steps", max_steps)
    _scaled(values.get("early", {}), "until", max_steps)
    _scaled(values.get("slow", {}), "decay_steps", max_steps)
    ltm = values.get("ltm")
    if isinstance(ltm, dict):
        if ltm.get("d_latent"):
            ltm["d_latent"] = max(4, ltm["d_latent"] // 4)
        if ltm.get("n_latent"):
            ltm["n_latent"] = 2 * max(1, min(ltm["n_latent"], 8) // 2)  # splits over 1 or 2 layers


def quick_comparison(data: dict) -> dict:
    """A copy of a comparison's mapping (as read from its YAML) shrunk as the module says."""
    data = copy.deepcopy(data)
    common = nested(dict(data.get("common") or {}))
    given = common.get("data", {})
    block, steps = given.get("block_size", 128), common.get("max_steps", 500)
    heads = common.get("n_head", 4)
    common.setdefault("n_layer", 2)
    common.setdefault("d_model", 128)
    _shrink(common, block, steps, heads)
    common.update(QUICK_COMMON)
    common["data"] = {**given, **QUICK_DATA}
    if str(given.get("dataset", "")).startswith("reasoning:"):  # an example must fit one block
        common["data"].update(vocab_size=given.get("vocab_size", 262), block_size=block)
        task = (data.get("eval") or {}).get("task")
        if task:
            data["eval"] = {**data["eval"], "task": {**task, "examples": 8}}
    common["slow"] = {**common.get("slow", {}), "warmup_steps": 2}
    data["common"] = common
    data["runs"] = [nested(run) if isinstance(run, dict) else run for run in data.get("runs") or []]
    for run in data["runs"]:
        if isinstance(run, dict):
            _shrink(run, block, steps, heads)
    data["eval"] = {**(data.get("eval") or {}), **QUICK_EVAL}
    data["seeds"] = 2
    name = str(data.get("name") or "comparison")
    data["name"] = f"{name}-quick"
    if data.get("out_dir"):
        data["out_dir"] = f"{data['out_dir']}-quick"
    return data
