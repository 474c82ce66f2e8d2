"""Start any family from a pretrained Hugging Face checkpoint (Llama, SmolLM2, TinyLlama, Qwen2).

A checkpoint is a folder with `config.json`, `model.safetensors` (or shards listed in
`model.safetensors.index.json`) and `tokenizer.json`; or a hub id, downloaded where the network
allows. The safetensors are read directly: `transformers` is not needed.

    from ltm.models import LatentThoughtModel, LTMOptions, from_hf
    model, tokenizer = from_hf("HuggingFaceTB/SmolLM2-135M", LatentThoughtModel,
                               LTMOptions(n_latent=30, d_latent=64), block_size=256)

The parts a family adds start as a no-op where it can: the LTM's cross-attention enters through
a zero output projection, so at step 0 the LTM gives the pretrained model's logits for any z.
A folder written by `python -m ltm.export` also carries the family's own tensors (under their
ltm names) and options (config.json "ltm_export"): loading it as the same family restores it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import safetensors
import torch
from tokenizers import Tokenizer
from torch import nn

from ltm.core.errors import CheckpointError, ConfigError, MissingFileError, UntrustedCodeError
from ltm.data.tokenizer import load_tokenizer
from ltm.models.config import DecoderConfig
from ltm.models.family import Family
from ltm.models.hf_format import HF_PREFIXES, decoder_config_from_hf, decoder_state_from_hf
from ltm.priors import PRIORS

CONFIG, WEIGHTS, INDEX, TOKENIZER = ("config.json", "model.safetensors", "model.safetensors.index.json",
                                     "tokenizer.json")
HUB_FILES = [CONFIG, "*.safetensors", INDEX, TOKENIZER, "tokenizer_config.json",
             "generation_config.json"]
DEFAULT_BLOCK_SIZE = 2048  # sequences the Python API's model takes when no block_size is given
EXPORT_KEY = "ltm_export"  # config.json entry of a folder written by ltm.export


def locate(path_or_id: str | Path) -> Path:
    """The local folder of a checkpoint: `path_or_id` itself, or a hub id's download.

    Raises:
        MissingFileError: a folder that does not exist, or a hub id not found locally while the
            hub cannot be reached.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise MissingFileError(f"pretrained checkpoint folder {text!r} does not exist; give a folder "
                               f"with config.json, *.safetensors and tokenizer.json, or a hub id "
                               f"such as HuggingFaceTB/SmolLM2-135M.")
    return _download(text)


def _download(repo_id: str) -> Path:
    hint = (f"{repo_id!r} is not found locally and the hub cannot be reached; download it with "
            f"`huggingface-cli download {repo_id} --local-dir DIR` and pass DIR.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingFileError(hint) from None
    try:  # the local cache first: no network needed for a model downloaded before
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # noqa: BLE001 (not cached: try the hub)
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise MissingFileError(hint)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception:  # noqa: BLE001 (no network, no such repository, no access: one message)
        raise MissingFileError(hint) from None


def read_hf_config(folder: Path) -> dict:
    """The checkpoint's config.json as a mapping."""
    path = folder / CONFIG
    if not path.is_file():
        raise MissingFileError(f"{folder} has no {CONFIG}; give the folder of a Hugging Face "
                               f"checkpoint (config.json, *.safetensors, tokenizer.json).")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); download it again.") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path} does not hold a config mapping; download it again.")
    return hf


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of the checkpoint: its shards (from the index) or model.safetensors.

    Raises:
        MissingFileError: no weights, or a shard the index lists that is absent.
    """
    index = folder / INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index} is corrupt ({err}); download the checkpoint again.") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise MissingFileError(f"{folder} lacks shard {missing[0]} of the {len(shards)} that "
                                   f"{INDEX} lists; download the checkpoint again (every shard).")
        return [folder / s for s in shards]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    raise MissingFileError(f"{folder} has no {WEIGHTS} (nor {INDEX}); ltm reads safetensors only: "
                           f"download the checkpoint's .safetensors files.")


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors files, by name."""
    tensors = {}
    for path in weight_files(folder):
        try:
            with safetensors.safe_open(str(path), "pt") as f:
                tensors.update({name: f.get_tensor(name) for name in f.keys()})  # noqa: SIM118
        except (safetensors.SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {path} ({err}); the file is truncated or corrupt; "
                                  f"download it again.") from None
    return tensors


def read_hf_tokenizer(folder: Path, rows: int) -> Tokenizer:
    """The checkpoint's tokenizer.json, checked against the `rows` of its embedding."""
    path = folder / TOKENIZER
    if not path.is_file():
        raise MissingFileError(f"{folder} has no {TOKENIZER}; ltm needs the checkpoint's fast "
                               f"tokenizer (tokenizer.json): download it with the weights.")
    tok = load_tokenizer(path)
    check_vocabulary(tok, rows, str(path))
    return tok


def check_vocabulary(tok: Tokenizer, rows: int, source: str) -> None:
    """Refuse a tokenizer with ids beyond the embedding's `rows`."""
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > rows:
        raise ConfigError(f"tokenizer {source} has {size} tokens but the checkpoint's embedding has "
                          f"{rows} rows; use the tokenizer.json that came with the weights.")


def build_family(family: type[Family], decoder: DecoderConfig, options=None, prior=None,
                 prior_kwargs=None, source: str = "the checkpoint") -> Family:
    """`family.from_config` at a checkpoint's shape; an option that cannot take that shape is named."""
    if isinstance(options, dict):
        options = family.Options(**options)
    try:
        return family.from_config(decoder, options, prior, prior_kwargs)
    except ConfigError as err:
        raise ConfigError(f"model '{family.name}' cannot take the shape of {source} ({decoder.n_layer} "
                          f"layers, d_model {decoder.d_model}, {decoder.n_head} heads): {err} Set its "
                          f"options to fit.") from None


def zero_new_parts(family: Family) -> None:
    """Make the parts a pretrained decoder lacks start as a no-op where they can: the
    cross-attention to latent thoughts adds zero until its output projection learns."""
    for block in family.decoder.blocks:
        if block.cross is not None:
            nn.init.zeros_(block.cross.out.weight)


def load_pretrained(family: Family, tensors: dict[str, torch.Tensor], source: str,
                    guide: nn.Module | None = None) -> list[str]:
    """Load a Hugging Face checkpoint's `tensors` into `family` (and `guide`).

    The decoder takes the pretrained tensors; the parts it adds start as a no-op
    (`zero_new_parts`); tensors an ltm export stores under ltm names (a family's own parts, its
    prior, "guide." globals) are loaded where this family has them, at the same shape.

    Returns:
        The family's parameters the checkpoint did not give (they keep their initial values).

    Raises:
        CheckpointError: a tensor whose shape does not fit the family.
    """
    zero_new_parts(family)
    cfg = family.decoder.cfg
    given = {f"decoder.{k}": v for k, v in decoder_state_from_hf(tensors, cfg, source).items()}
    given.update({k: v for k, v in tensors.items() if not k.startswith(HF_PREFIXES)})
    targets = {"": family} if guide is None else {"": family, "guide.": guide}
    loaded = set()
    for prefix, module in targets.items():
        own = module.state_dict()
        theirs = {k[len(prefix):]: v for k, v in given.items()
                  if k.startswith(prefix) and k[len(prefix):] in own}
        for name, t in theirs.items():
            if tuple(t.shape) != tuple(own[name].shape):
                raise CheckpointError(f"{source}: tensor '{prefix}{name}' has shape {tuple(t.shape)} "
                                      f"but the model's is {tuple(own[name].shape)}; the checkpoint was "
                                      f"exported from a model with other options.")
        module.load_state_dict(theirs, strict=False)
        loaded |= {prefix + k for k in theirs}
    return sorted(name for name, _ in family.named_parameters() if name not in loaded)


def from_hf(path: str | Path, family: type[Family], options=None, *, block_size: int | None = None,
            prior: str | type | None = None, prior_kwargs: dict | None = None, trust_code: bool = False
            ) -> tuple[Family, Tokenizer]:
    """A family started from a pretrained Llama or Qwen2 checkpoint, and its tokenizer.

    Args:
        path: A local folder, or a hub id (downloaded where the network allows).
        family: The family class (e.g. `LatentThoughtModel`, `ltm.ponder.PonderLM2`).
        options: The family's options (its `Options` dataclass or a mapping); default: those an
            ltm export of this family stored, else the family's defaults.
        block_size: Longest sequence the model takes; default: an ltm export's, else
            min(max_position_embeddings, 2048).
        prior, prior_kwargs: The prior, for families that take one (default: an export's, else
            the family's own).
        trust_code: Import a `module:Class` prior that an export's config.json names (as
            `--trust-code` does for checkpoints); without it such a prior is refused.

    Returns:
        (model in eval mode, `tokenizers.Tokenizer`).
    """
    folder = locate(path)
    hf = read_hf_config(folder)
    source = str(path)
    export = hf.get(EXPORT_KEY) if isinstance(hf.get(EXPORT_KEY), dict) else {}
    if export.get("model") == family.name:
        options = export.get("options") if options is None else options
        if prior is None:
            prior = export.get("prior")
            _refuse_untrusted_prior(prior, folder / CONFIG, trust_code)
        prior_kwargs = export.get("prior_kwargs") if prior_kwargs is None else prior_kwargs
    if block_size is None:
        block_size = export.get("block_size") or min(int(hf.get("max_position_embeddings", 2048)),
                                                     DEFAULT_BLOCK_SIZE)
    cfg = decoder_config_from_hf(hf, block_size=block_size, source=source)
    model = build_family(family, cfg, options, prior, prior_kwargs, source)
    load_pretrained(model, read_hf_weights(folder), source)
    return model.eval(), read_hf_tokenizer(folder, cfg.vocab_size)


def _refuse_untrusted_prior(prior, source: Path, trust_code: bool) -> None:
    """An export's `module:Class` prior is code the caller did not choose: refused, before any import,
    unless trusted (the checkpoint loader's rule, `ltm.training.trusted_code`, for this one field)."""
    if trust_code or not isinstance(prior, str) or prior in PRIORS or ":" not in prior:
        return
    raise UntrustedCodeError(f"{source} names code for its prior, '{prior}', which loading would import "
                             f"and run; pass trust_code=True only if you trust where this checkpoint "
                             f"came from.")


def options_dict(options) -> dict:
    """A family's options as a mapping (for an export's config.json)."""
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
