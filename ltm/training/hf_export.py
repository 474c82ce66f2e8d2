"""Export a trained checkpoint as a Hugging Face folder (`python -m ltm.export`).

The folder holds `config.json` (a Llama, or Qwen2 with attention biases), `model.safetensors`
(the decoder under Hugging Face names), `tokenizer.json`, `tokenizer_config.json` and
`generation_config.json`. A vanilla decoder is then a plain `LlamaForCausalLM`:
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` runs it with no code of ltm's. Every
other family keeps its own tensors (cross-attention, router, prior, guide globals) under their ltm
names in the same file, and its run's config under config.json's "ltm_export" entry, with ltm's
`manifest.json`: the folder loads back into ltm exactly (`--init-from-hf DIR`,
`ltm.models.from_hf`, or as a checkpoint: `--checkpoint DIR`, `--init-from DIR`).

    export_hf("runs/ltm-default", "exports/ltm-default")
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import safetensors.torch

from ltm.core.errors import ConfigError
from ltm.data.tokenizer import special_ids
from ltm.models.hf_format import hf_config_from_decoder, hf_state_from_decoder, pretrained_names
from ltm.models.pretrained import EXPORT_KEY, options_dict
from ltm.training.checkpoint import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    _fsync,
    _sha256,
    load_checkpoint,
    load_guide,
    read_manifest,
    resolve_checkpoint,
)


def export_hf(checkpoint: str | Path, out: str | Path, overwrite: bool = False,
              trust_code: bool = False) -> Path:
    """Write the checkpoint's model as a Hugging Face folder `out` (atomically: all or nothing).

    Args:
        checkpoint: A run directory (its latest step) or a step directory.
        out: The folder to create.
        overwrite: Replace `out` if it exists.
        trust_code: As in `load_checkpoint`.

    Returns:
        The folder written.

    Raises:
        ConfigError: `out` exists (without `overwrite`), or the model has no Hugging Face form.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite.")
    step_dir = resolve_checkpoint(checkpoint)
    manifest = read_manifest(step_dir)
    model, tokenizer, config = load_checkpoint(step_dir, trust_code=trust_code)
    guide = load_guide(step_dir, model=model, trust_code=trust_code)
    cfg = model.decoder.cfg
    bos, eos, pad = special_ids(tokenizer)
    hf = hf_config_from_decoder(cfg, bos_id=bos, eos_id=eos, pad_id=pad)
    hf[EXPORT_KEY] = {"format": EXPORT_FORMAT, "model": model.name,
                      "options": options_dict(config.options), "prior": config.prior,
                      "prior_kwargs": config.prior_kwargs, "block_size": cfg.block_size,
                      "train_config": {**config.to_dict(), "resume": None, "init_from": None,
                                       "init_from_hf": None, "overwrite": False}}
    state = model.state_dict()
    core = {f"decoder.{name}" for name in pretrained_names(cfg)}
    decoder = {k[len("decoder."):]: v for k, v in state.items() if k in core}
    tensors = hf_state_from_decoder(decoder, cfg)
    tensors.update({k: v for k, v in state.items() if k not in core})
    tensors.update({f"guide.{k}": v for k, v in guide.state_dict().items()})
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}  # no shared storage
    names = [tokenizer.id_to_token(i) for i in (bos, eos, pad)]
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": names[0],
                        "eos_token": names[1], "pad_token": names[2],
                        "model_max_length": cfg.block_size, "clean_up_tokenization_spaces": False}
    generation = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        (tmp / CONFIG_FILE).write_text(json.dumps(hf, indent=2) + "\n")
        safetensors.torch.save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        os.chmod(tmp / MODEL_FILE, (tmp / CONFIG_FILE).stat().st_mode)  # safetensors writes 0600
        tokenizer.save(str(tmp / TOKENIZER_FILE))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        files = {f: {"bytes": (tmp / f).stat().st_size, "sha256": _sha256(tmp / f)}
                 for f in (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)}
        ltm_manifest = {"format": EXPORT_FORMAT, "step": manifest.get("step"), "model": model.name,
                        **{k: manifest[k] for k in ("vocab_size", "bos_id", "eos_id", "pad_id")
                           if k in manifest}, "files": files}
        (tmp / MANIFEST_FILE).write_text(json.dumps(ltm_manifest, indent=2) + "\n")
        for f in tmp.iterdir():
            _fsync(f)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

