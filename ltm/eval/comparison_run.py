"""Run a comparison: check everything, then train and score each run in turn, resumable at any point.

Before any training: every run's config is built (`ltm.eval.comparison`), the data is prepared
once, every model is built once to count its parameters and the FLOPs of one training step
(`ltm.eval.flops`), and a run folder that already holds checkpoints must have been trained with the
same config. Then, run by run: train (`Trainer`, resume="auto", so an interrupted run continues
exactly), score (`ltm.eval.run_eval.evaluate_run`, saved as RUN/eval.json), rewrite results.md and
the plots. A run whose final checkpoint and eval.json exist is skipped.

Files in out_dir/RUN besides the trainer's: `cost.json` (parameters, FLOPs per step, the training
segments and their wall times) and `eval.json`; in out_dir, `sessions.json`: each invocation's
command, start and wall time, so the total survives interruptions.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

from ltm.core.errors import ConfigError, UserError
from ltm.data import prepare_data
from ltm.data.reasoning import is_reasoning_spec, parse_reasoning
from ltm.eval.comparison import Comparison, Instance, RunSpec, run_signature
from ltm.eval.comparison_report import write_report
from ltm.eval.controls import DESCRIPTIONS, Sized, control_values
from ltm.eval.flops import staged_step_cost, step_cost
from ltm.eval.run_eval import evaluate_run
from ltm.training.checkpoint import latest_checkpoint, read_config, read_manifest
from ltm.training.config import key_name
from ltm.training.run_lock import RunLock
from ltm.training.trainer import Trainer
from ltm.training.trusted_code import named_code

COST_FILE, EVAL_FILE, SESSIONS_FILE = "cost.json", "eval.json", "sessions.json"
CONTROLS_FILE = "controls.json"
# Settings that change how a run is executed or where it lives, not what it computes.
_MECHANICS = ("out_dir", "resume", "init_from", "overwrite", "progress", "threads", "device",
              "cache_dir", "trust_code")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a comparison killed mid-write keeps the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def finished_step(run_dir: Path) -> int:
    """The step of the run's latest complete checkpoint (0 when there is none)."""
    latest = latest_checkpoint(run_dir)
    return int(read_manifest(latest)["step"]) if latest is not None else 0


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and not prefix and key not in ("prior_kwargs", "guide_kwargs"):
            out.update(_flatten(value, f"{key}."))
        elif prefix or key not in _MECHANICS:
            out[prefix + key] = value
    return out


def own_code(run: RunSpec) -> list[str]:
    """The `module:Class` paths the comparison's own config gives this run: its checkpoints may
    name them (the user chose them), and no other."""
    return list(named_code(run.config.to_dict()).values())


def check_existing_run(comp: Comparison, inst: Instance) -> None:
    """Refuse a run folder whose checkpoints were trained with another config."""
    latest = latest_checkpoint(inst.dir)
    if latest is None:
        return
    saved = _flatten(read_config(latest, own_code(inst.run)).to_dict())
    wanted = _flatten(inst.config.to_dict())
    for key in wanted:
        if saved.get(key) != wanted[key]:
            raise ConfigError(f"run '{inst.run.name}': {inst.dir} holds a run trained with {key_name(key)} "
                              f"{saved.get(key)!r}, but {comp.source} now gives {wanted[key]!r}; "
                              f"restore the value, or delete that folder to train the run again.")


def size_controls(comp: Comparison, vocab_size: int, batch, log=print) -> None:
    """Add every run's controls to `comp`, sized for this vocabulary (`ltm.eval.controls`); the
    sizes are kept in out_dir/controls.json and reused while the run's config is unchanged."""
    path = comp.out_dir / CONTROLS_FILE
    saved = read_json(path) or {}
    for run in comp.base_runs():
        for kind in run.controls:
            name, signature = f"{run.name}.{kind}", run_signature(run.config)
            entry = saved.get(name)
            if entry and entry.get("run_signature") == signature and entry.get("vocab_size") == vocab_size:
                sized = Sized(**entry["sizing"])
            else:
                sized = control_values(kind, run.config, vocab_size, batch, run.name)
                saved[name] = {"run_signature": signature, "vocab_size": vocab_size,
                               "sizing": sized.to_dict()}
            control = comp.add_control(run, kind, sized)
            log(f"control {control.name} of {run.name}: {DESCRIPTIONS[kind]}"
                + (f" ({sized.describe()})" if sized.describe() else ""))
    if saved:
        write_json(path, saved)


def run_step_cost(cfg, vocab_size: int, batch) -> dict:
    """The run's step cost (`ltm.eval.flops.step_cost`) on `batch` of the common data; a run on a
    reasoning task is measured on its own blocks (its rendering, its block size), a run with a
    curriculum (Coconut's stages) on its blocks at every stage."""
    if not is_reasoning_spec(cfg.data.dataset):
        return step_cost(cfg, vocab_size, batch)
    corpus = parse_reasoning(cfg.data.dataset)
    train = prepare_data(cfg.data, cfg.data_cache_dir()).train
    if not corpus.stages:
        return step_cost(cfg, vocab_size, train.fixed_batches(cfg.batch_size, 1)[0])
    batches = [stage.fixed_batches(cfg.batch_size, 1)[0] for stage in train.stages]  # (B, T+1) each
    return staged_step_cost(cfg, vocab_size, batches, corpus.stage_at)


def prepare(comp: Comparison, log=print) -> dict:
    """Everything checked before training: the data once, the controls sized, each run's cost,
    existing run folders.

    Returns:
        {instance key: cost dict} (as saved in RUN[/seed_S]/cost.json).
    """
    cfg = comp.runs[0].config
    try:
        data = prepare_data(cfg.data, cfg.data_cache_dir())
    except UserError as err:
        message = str(err).strip().splitlines()[0]
        raise type(err)(f"common: dataset {cfg.data.dataset!r} of {comp.source} cannot be used: "
                        f"{message}") from None
    log(f"data: {len(data.train)} train / {len(data.val)} val blocks of {cfg.data.block_size} tokens, "
        f"vocabulary {data.vocab_size}")
    batch = data.train.fixed_batches(cfg.batch_size, 1)[0]  # (B, T+1)
    size_controls(comp, data.vocab_size, batch, log)
    measured, costs = {}, {}
    for inst in comp.instances():
        check_existing_run(comp, inst)
        cost = read_json(inst.dir / COST_FILE) or {}
        if "flops_per_step" not in cost:
            if inst.run.name not in measured:  # the same at every seed
                try:
                    measured[inst.run.name] = run_step_cost(inst.run.config, data.vocab_size, batch)
                except (ConfigError, ValueError, TypeError) as err:
                    raise ConfigError(f"run '{inst.run.name}' of {comp.source}: "
                                      f"{str(err).splitlines()[0]}") from None
            cost.update(measured[inst.run.name])
            cost.setdefault("train_segments", [])
        tokens_per_step = cfg.batch_size * inst.config.data.block_size
        cost.update(model=inst.config.model, seed=inst.seed, max_steps=cfg.max_steps,
                    tokens_per_step=tokens_per_step, training_tokens=tokens_per_step * cfg.max_steps,
                    training_flops=cost.get("training_flops", cost["flops_per_step"] * cfg.max_steps))
        costs[inst.key] = cost
    return costs


def train_run(inst: Instance, cost: dict, log=print) -> None:
    """Train to max_steps (resuming), adding this segment's wall time to its cost.json."""
    trainer, started = None, time.perf_counter()
    from_step = finished_step(inst.dir)
    try:
        trainer = Trainer(inst.config, log=log)
        trainer.train()
    finally:
        to_step = trainer.step if trainer is not None else from_step
        if to_step > from_step:
            cost["train_segments"].append({"from_step": from_step, "to_step": to_step,
                                           "seconds": round(time.perf_counter() - started, 3)})
            write_json(inst.dir / COST_FILE, cost)


def _record_session(comp: Comparison, command: str, started: float, date: str) -> list[dict]:
    """This invocation's wall time so far, added to out_dir/sessions.json; returns every session."""
    path = comp.out_dir / SESSIONS_FILE
    sessions = [s for s in (read_json(path) or {}).get("sessions", []) if s.get("date") != date]
    sessions.append({"date": date, "command": command,
                     "seconds": round(time.perf_counter() - started, 3)})
    write_json(path, {"sessions": sessions})
    return sessions


def run_comparison(comp: Comparison, command: str, log=print, jobs: int = 1) -> Path:
    """Train and score every run of `comp` (skipping finished ones); returns results.md's path.

    Args:
        jobs: Runs trained and scored at once, each in a process of its own
            (`ltm.eval.comparison_parallel`); 1: one after another in this process.

    Holds the lock of `comp.out_dir` (`RunLock`) throughout: a second comparison into the same
    folder is refused.
    """
    lock = RunLock(comp.out_dir, "comparison").acquire()
    try:
        started = time.perf_counter()
        try:
            costs = prepare(comp, log)
        except BaseException:
            lock.release(tidy=True)  # refused before training: no folder or lock left behind
            raise
        return _run_comparison(comp, command, log, costs, started, jobs)
    finally:
        lock.release()


def work_on(inst: Instance, cost: dict, settings, tag: str, log=print) -> dict:
    """Train `inst` to max_steps (resuming) unless it is there, and score it unless its eval.json is
    current; returns its eval report (saved as RUN/eval.json)."""
    max_steps = inst.config.max_steps
    step = finished_step(inst.dir)
    if step < max_steps:
        log(f"{tag}: training {inst.config.model} (seed {inst.seed}) from step {step} to "
            f"{max_steps} in {inst.dir}")
        train_run(inst, cost, log)
        step = finished_step(inst.dir)
    report = read_json(inst.dir / EVAL_FILE)
    if report and report.get("step") == step and report.get("settings") == settings.to_dict():
        log(f"{tag}: trained to step {step} and scored already; skipped")
        return report
    log(f"{tag}: scoring the held-out split (K = {settings.inner_steps})")
    t0 = time.perf_counter()
    report = evaluate_run(inst.dir, settings, own_code(inst.run))
    report["eval_seconds"] = round(time.perf_counter() - t0, 3)
    write_json(inst.dir / EVAL_FILE, report)
    return report


def _run_comparison(comp: Comparison, command: str, log, costs: dict, started: float,
                    jobs: int = 1) -> Path:
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    instances = comp.instances()
    for inst in instances:
        if read_json(inst.dir / COST_FILE) != costs[inst.key]:
            write_json(inst.dir / COST_FILE, costs[inst.key])
    tags = {inst.key: f"[{i}/{len(instances)}] {inst.key}" for i, inst in enumerate(instances, 1)}

    def done(inst: Instance) -> None:
        costs[inst.key] = read_json(inst.dir / COST_FILE) or costs[inst.key]  # its new segments
        path = write_report(comp, costs, command, _record_session(comp, command, started, date))
        log(f"{tags[inst.key]}: done; wrote {path}")

    if jobs > 1:
        from ltm.eval.comparison_parallel import work_in_parallel

        work_in_parallel(work_on, comp, instances, costs, tags, jobs, done, log)
    else:
        for inst in instances:
            work_on(inst, costs[inst.key], comp.eval, tags[inst.key], log)
            done(inst)
    return comp.out_dir / "results.md"
