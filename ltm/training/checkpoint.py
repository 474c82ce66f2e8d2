"""Checkpoints: step directories written atomically, a `latest` marker, and loading with clear errors.

A run directory holds `metrics.jsonl`, `latest` (the name of the newest complete step directory)
and `step_000100/`, ... each with

    model.safetensors   decoder + prior (+ guide globals, prefixed "guide.") state, tied weights once
    config.json         the run's `TrainConfig`, field by field (usable as `--config`)
    trainer_state.pt    slow optimiser + scheduler state, step, RNG states, data-iterator state
    tokenizer.json      the tokenizer the token ids belong to
    manifest.json       step, vocabulary, special ids, and size + sha256 of every file above

A step directory is written under a temporary name and renamed into place, then `latest` is
replaced; a run killed mid-write leaves the previous checkpoint untouched.

    model, tokenizer, config = load_checkpoint("runs/ltm-default")  # run dir -> latest step
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
from tokenizers import Tokenizer
from torch import nn

from ltm.core.errors import CheckpointError, CheckpointSaveError, ConfigError
from ltm.models.hf_format import HF_PREFIXES, decoder_state_from_hf
from ltm.models.pretrained import EXPORT_KEY
from ltm.training.build import build_model, build_run_guide
from ltm.training.config import TrainConfig
from ltm.training.fsdp import shard_like
from ltm.training.trusted_code import refuse_untrusted_code
from ltm.training.write_errors import RecordingWriter, failure_reason

MODEL_FILE, CONFIG_FILE, STATE_FILE = "model.safetensors", "config.json", "trainer_state.pt"
TOKENIZER_FILE, MANIFEST_FILE, LATEST_FILE = "tokenizer.json", "manifest.json", "latest"
FORMAT = "ltm-checkpoint/1"
EXPORT_FORMAT = "ltm-hf-export/1"  # a Hugging Face folder written by ltm.export (ltm.training.hf_export)
log = logging.getLogger(__name__)  # unconfigured, a warning prints as its bare message on stderr
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def step_dirs(run_dir: str | Path, complete: bool = True) -> list[tuple[int, Path]]:
    """(step, path) of the step directories in `run_dir`, by step: those that hold a manifest, or
    with `complete=False` every one."""
    found = []
    for p in Path(run_dir).glob("step_*"):
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (not complete or (p / MANIFEST_FILE).is_file()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The step directory named by `run_dir/latest`, else the highest complete one, else None.

    A later step directory without a manifest (a save that did not finish, or files removed) is
    passed over with a logged note naming it and the step used instead.
    """
    run_dir = Path(run_dir)
    marker = run_dir / LATEST_FILE
    chosen = None
    if marker.is_file():
        named = run_dir / marker.read_text().strip()
        if (named / MANIFEST_FILE).is_file():
            chosen = named
    if chosen is None:
        found = step_dirs(run_dir)
        chosen = found[-1][1] if found else None
    newest = step_dirs(run_dir, complete=False)
    if newest and newest[-1][1] != chosen and not (newest[-1][1] / MANIFEST_FILE).is_file():
        using = f"using {chosen.name}, the latest complete one" if chosen else "no complete one remains"
        log.warning(f"note: checkpoint {newest[-1][1]} is incomplete ({MANIFEST_FILE}, written last, is "
                    f"missing: its save was interrupted or its files were removed); {using}.")
    return chosen


def resolve_checkpoint(path: str | Path) -> Path:
    """A step directory from a step directory, a run directory (its latest) or a file inside one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; give a run directory (e.g. "
                              f"runs/ltm-default) or one of its step_NNNNNN directories.")
    if path.is_file():
        path = path.parent
    if (path / MANIFEST_FILE).is_file() or _STEP_DIR.match(path.name):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path} holds no checkpoint (no step_NNNNNN directory with a "
                              f"{MANIFEST_FILE}); train one with python -m ltm.train --out-dir {path}.")
    return latest


# -- writing --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def weight_tensors(model: nn.Module, guide: nn.Module | None = None,
                   model_state: dict | None = None) -> tuple[dict, dict]:
    """(tensors to save, aliases): each storage once; `aliases` maps a tied name to the saved one.
    `model_state` replaces `model.state_dict()` (a sharded model's, gathered whole)."""
    state = dict(model.state_dict() if model_state is None else model_state)
    if guide is not None:
        state.update({f"guide.{k}": v for k, v in guide.state_dict().items()})
    tensors, aliases, seen = {}, {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if t.numel() and key in seen:  # a tied weight (e.g. an output head sharing the embedding)
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().cpu().contiguous()
    return tensors, aliases


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, config: TrainConfig,
                    tokenizer: Tokenizer, trainer_state: dict, guide: nn.Module | None = None,
                    keep_last: int = 0, extra: dict | None = None,
                    model_state: dict | None = None) -> Path:
    """Write `run_dir/step_NNNNNN/` atomically, point `latest` at it, prune to the last `keep_last`.

    Args:
        run_dir: The run directory.
        step: Outer steps taken.
        model: The model (decoder + prior) whose state is saved.
        config: The run's configuration (saved as config.json).
        tokenizer: The tokenizer of the token ids.
        trainer_state: Optimiser/scheduler/RNG/data state (saved with `torch.save`).
        guide: The guide, whose global parameters (if any) are saved under "guide.".
        keep_last: Keep this many step directories (older ones are deleted); 0 keeps all.
        extra: More entries for the manifest (e.g. special token ids).
        model_state: The model's state gathered whole, in place of `model.state_dict()` (an FSDP
            model's holds shards; `ltm.training.fsdp.full_model_state`).

    Returns:
        The step directory.

    Raises:
        CheckpointSaveError: when a file cannot be written (no space left, a file-size limit, no
            permission): one sentence naming the directory and the reason; nothing half-written
            is left, and the previous checkpoint is untouched.
    """
    run_dir = Path(run_dir)
    recorder = RecordingWriter(None)
    try:
        return _save(run_dir, step, model, config, tokenizer, trainer_state, guide, keep_last, extra,
                     recorder, model_state)
    except Exception as err:
        reason = failure_reason(recorder.error or err)
        if reason is None:  # not a write failure: a bug, with its traceback
            raise
        previous = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        kept = (f"the previous checkpoint {previous.name} is intact" if previous is not None
                else "no earlier checkpoint exists")
        raise CheckpointSaveError(f"cannot save the checkpoint of step {step} in {run_dir}: {reason}; "
                                  f"nothing was half-written and {kept}; free space or raise the "
                                  f"limit, then continue with --resume auto.") from None


def _save(run_dir: Path, step: int, model, config, tokenizer, trainer_state, guide, keep_last, extra,
          recorder: RecordingWriter, model_state: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    for pattern in (".tmp-step_*", ".old-step_*"):  # left by a run killed while writing
        for stale in run_dir.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    name = step_dir_name(step)
    tmp = run_dir / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # honours the umask, unlike tempfile.mkdtemp
    try:
        tensors, aliases = weight_tensors(model, guide, model_state)
        safetensors.torch.save_file(tensors, str(tmp / MODEL_FILE),
                                    metadata={"format": FORMAT, "aliases": json.dumps(aliases)})
        saved = {**config.to_dict(), "resume": None, "init_from": None, "init_from_hf": None,
                 "overwrite": False, "trust_code": False}
        (tmp / CONFIG_FILE).write_text(json.dumps(saved, indent=2) + "\n")
        os.chmod(tmp / MODEL_FILE, (tmp / CONFIG_FILE).stat().st_mode)  # safetensors writes 0600
        with open(tmp / STATE_FILE, "wb", buffering=0) as raw:  # torch hides the OSError: keep it
            recorder.file = raw
            torch.save(trainer_state, recorder)
        tokenizer.save(str(tmp / TOKENIZER_FILE))
        files = {f: {"bytes": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)}
                 for f in (MODEL_FILE, CONFIG_FILE, STATE_FILE, TOKENIZER_FILE)}
        manifest = {"format": FORMAT, "step": step, "model": config.model, **(extra or {}),
                    "files": files}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        for f in (*files, MANIFEST_FILE):
            _fsync(tmp / f)
        final = run_dir / name
        if final.exists():  # re-saving a step: move the old copy aside, then drop it
            old = run_dir / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(run_dir)
    _write_text_atomic(run_dir / LATEST_FILE, name + "\n")
    _prune(run_dir, keep_last, step)
    return final


def _prune(run_dir: Path, keep_last: int, step: int) -> None:
    """Delete all but the newest `keep_last` step directories up to `step`; later ones are left."""
    if keep_last <= 0:
        return
    older = [p for s, p in step_dirs(run_dir) if s <= step]
    for p in older[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


# -- reading --------------------------------------------------------------------------------------


def read_manifest(step_dir: Path, files: tuple[str, ...] = ()) -> dict:
    """The manifest of `step_dir`, after checking that each of `files` is whole (size + sha256)."""
    path = step_dir / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{step_dir} is not a complete checkpoint: {MANIFEST_FILE} is missing "
                              f"(it is written last); use an earlier step directory.")
    try:
        manifest = json.loads(path.read_text())
        listed = manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}); use an earlier step directory.") from None
    for f in files:
        p, want = step_dir / f, listed.get(f)
        if want is None:
            raise CheckpointError(f"{path} does not list {f}; the checkpoint is from another tool "
                                  f"or corrupt; use an earlier step directory.")
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} is missing; restore it or use an earlier "
                                  f"step directory.")
        size = p.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(f"checkpoint file {p} is truncated or altered ({size} bytes, "
                                  f"{want['bytes']} written); use an earlier step directory.")
        if _sha256(p) != want["sha256"]:
            raise CheckpointError(f"checkpoint file {p} is corrupt (its sha256 does not match the "
                                  f"manifest); use an earlier step directory.")
    return manifest


def read_config(step_dir: Path, trust_code: bool | Collection[str] = False) -> TrainConfig:
    """The `TrainConfig` saved in `step_dir/config.json`.

    Args:
        trust_code: Allow the config to name its model, prior or guide by a `module:Class` path,
            which building it imports: True for any path, or a collection of the allowed paths
            (`ltm.training.trusted_code`). Registry names are always allowed.

    Raises:
        UntrustedCodeError: for a `module:Class` path not trusted, before anything is imported.
        CheckpointError: for a config that is not valid JSON or not a valid config.
    """
    path = step_dir / CONFIG_FILE
    read_manifest(step_dir, (CONFIG_FILE,))
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); use an earlier step directory.") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} does not hold a config mapping; use an earlier step directory.")
    if isinstance(values.get(EXPORT_KEY), dict):  # an exported Hugging Face folder: the run's config
        values = values[EXPORT_KEY].get("train_config", {})
    refuse_untrusted_code(values, str(path), trust_code)
    try:
        return TrainConfig.from_dict(values, str(path))
    except ConfigError as err:
        raise CheckpointError(f"{err} (in {path}: the checkpoint was written by another version of ltm, "
                              f"or names a module that is not importable here).") from None


def read_tokenizer(step_dir: Path) -> Tokenizer:
    read_manifest(step_dir, (TOKENIZER_FILE,))
    try:
        return Tokenizer.from_file(str(step_dir / TOKENIZER_FILE))
    except Exception as err:  # tokenizers raises a bare Exception
        raise CheckpointError(f"cannot read {step_dir / TOKENIZER_FILE} ({err}).") from None


def load_weights(step_dir: Path, model: nn.Module | None = None, guide: nn.Module | None = None) -> None:
    """Load `model` and/or `guide` (its globals) from `step_dir/model.safetensors`, checking shapes
    (a model sharded by `--fsdp` takes each rank's shard of the whole tensors)."""
    path = step_dir / MODEL_FILE
    manifest = read_manifest(step_dir, (MODEL_FILE,))
    try:
        tensors = safetensors.torch.load_file(str(path))
        with safetensors.safe_open(str(path), "pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path} ({err}); the file is corrupt or truncated; use "
                              f"an earlier step directory.") from None
    tensors.update({name: tensors[target] for name, target in aliases.items()})
    if manifest.get("format") == EXPORT_FORMAT:  # the decoder's tensors under Hugging Face names
        hf = [k for k in tensors if k.startswith(HF_PREFIXES)]
        if model is not None:
            decoder = decoder_state_from_hf(tensors, model.decoder.cfg, str(path))
            tensors.update({f"decoder.{k}": v for k, v in decoder.items()})
        for k in hf:
            del tensors[k]
    modules = {"": model, "guide.": guide}
    for prefix, module in ((p, m) for p, m in modules.items() if m is not None):
        own = module.state_dict()
        theirs = {k[len(prefix):]: v for k, v in tensors.items()
                  if k.startswith(prefix) and (prefix or not k.startswith("guide."))}
        missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        if missing or unexpected:
            what = (f"lacks '{prefix}{missing[0]}'" if missing
                    else f"has an unexpected '{prefix}{unexpected[0]}'")
            raise CheckpointError(f"{path} {what}: it was written for a different model (check model, "
                                  f"prior, guide and n_layer against its config.json).")
        for k, t in own.items():
            if tuple(t.shape) != tuple(theirs[k].shape):
                raise CheckpointError(
                    f"{path} does not fit this model: '{prefix}{k}' has shape {tuple(theirs[k].shape)} "
                    f"there but {tuple(t.shape)} here; use the sizes in its config.json (d_model, "
                    f"n_layer, n_latent, d_latent, vocabulary).")
        module.load_state_dict({k: shard_like(own[k], v) for k, v in theirs.items()})


def load_trainer_state(step_dir: Path) -> dict:
    path = step_dir / STATE_FILE
    if read_manifest(step_dir).get("format") == EXPORT_FORMAT:
        raise CheckpointError(f"{step_dir} is an exported model without optimiser state; it cannot be "
                              f"resumed: start a run from its weights with --init-from {step_dir}.")
    read_manifest(step_dir, (STATE_FILE,))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged pickle/zip
        raise CheckpointError(f"cannot read {path} ({type(err).__name__}); it is corrupt; use an "
                              f"earlier step directory.") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    trust_code: bool | Collection[str] = False):
    """Load a trained model for sampling or evaluation in one call.

    Args:
        path: A run directory (its latest checkpoint), a step directory, or a file inside one.
        device: Where to put the model.
        trust_code: Allow a config that names its model, prior or guide by a `module:Class` path
            (imported when the model is built); see `read_config`. Off by default: a shared
            checkpoint then runs no code but ltm's own.

    Returns:
        (model, tokenizer, config): the model in eval mode, its `tokenizers.Tokenizer`, and the
        run's `TrainConfig`.

    Raises:
        CheckpointError: naming the file and what to do, for a missing, incomplete, corrupt or
            incompatible checkpoint.
    """
    step_dir = resolve_checkpoint(path)
    manifest = read_manifest(step_dir)
    config = read_config(step_dir, trust_code)
    tokenizer = read_tokenizer(step_dir)
    model = build_model(config, int(manifest["vocab_size"]))
    load_weights(step_dir, model)
    return model.to(device).eval(), tokenizer, config


def load_guide(path: str | Path, device: str | torch.device = "cpu", model: nn.Module | None = None,
               trust_code: bool | Collection[str] = False):
    """The run's guide, with its global parameters (amortised guides) loaded from the checkpoint.

    Args:
        model: The run's model, which sizes guides with global parameters (default: built from
            the checkpoint's config, without its weights).
        trust_code: As in `load_checkpoint`.
    """
    step_dir = resolve_checkpoint(path)
    config = read_config(step_dir, trust_code)
    if model is None:
        model = build_model(config, int(read_manifest(step_dir)["vocab_size"]))
    guide = build_run_guide(config, model)
    load_weights(step_dir, guide=guide)
    return guide.to(device)


# -- RNG state ------------------------------------------------------------------------------------


def rng_state() -> dict:
    """torch, Python and numpy global RNG states, in types `torch.load(weights_only=True)` reads."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {**np_state["state"], "key": np.array(np_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(np_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
