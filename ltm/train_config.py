"""`TrainConfig`: the one flat dataclass behind the CLI flags, config files and saved `config.json`.

Every field is a flag (`inner_steps` -> `--inner-steps`), a key of a YAML/JSON config file and a
key of the `config.json` saved with each checkpoint. Adding a field adds all three. Precedence:
dataclass defaults < `--config` file < command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from inference import InnerLoopConfig, SlowConfig
from ltm.config import DecoderConfig
from ltm.data import DataConfig


class ConfigError(ValueError):
    """A user error in a config file, a flag value or a field combination (printed as one sentence)."""


def _f(default, help: str, section: str):
    """A dataclass field with its help text (shown in `--help`) and its help section."""
    meta = {"help": help, "section": section}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a training run needs; see `python -m ltm.train --help`."""

    # model
    model: str = _f("ltm", "model family: ltm, vanilla, ponderlm2, ponderlm, adaptive_cot, pause, looped, "
                    "ponderlm2_stochastic, or module:function", "model")
    d_model: int = _f(128, "residual stream width", "model")
    n_layer: int = _f(2, "transformer blocks", "model")
    n_head: int = _f(4, "attention heads per block", "model")
    d_ff: int | None = _f(None, "SwiGLU hidden width (none: 8/3 d_model)", "model")
    n_latent: int = _f(4, "latent thought vectors N_z per sequence, split evenly over layers", "model")
    d_latent: int | None = _f(32, "width of each latent vector (none: d_model)", "model")
    window: int | None = _f(None, "sliding self-attention window in tokens (none: full causal)", "model")
    prior: str = _f("standard_normal", "prior over thoughts: registry name or module:Class", "model")
    prior_kwargs: dict = _f({}, "keyword arguments of the prior, as JSON", "model")
    guide: str = _f("gaussian", "local posterior guide: registry name or module:Class", "model")
    guide_kwargs: dict = _f({}, "keyword arguments of the guide, as JSON", "model")
    thoughts: int = _f(1, "thoughts K per token (ponderlm2); pause slots P per token (pause)", "model")
    jacobi_sweeps: int = _f(3, "ponderlm2: Jacobi sweeps J solving the thoughts at training time", "model")
    max_jacobi_sweeps: int | None = _f(None, "ponderlm2: draw J uniformly from [jacobi_sweeps, this] "
                                       "per training step (none: J fixed)", "model")
    loops: int = _f(2, "looped: passes L through the shared block stack", "model")
    ponder_passes: int = _f(3, "ponderlm (v1): pondering passes S (decode costs S+1 steps per token)",
                            "model")
    max_latent_steps: int = _f(3, "adaptive_cot: most latent steps l_max per token", "model")
    halt_lambda: float = _f(0.01, "adaptive_cot: router penalty lambda per expected latent step", "model")
    halt_beta: float = _f(1.0, "adaptive_cot: weight beta of the router's accuracy term", "model")
    prune_threshold: float = _f(0.0, "adaptive_cot: skip steps whose reach is below this (0: never)",
                                "model")
    # inner (fast) loop
    inner_steps: int = _f(4, "inner steps K fitting q(z|x) per training batch", "inner loop")
    fast_lr: float = _f(0.3, "fast (inner-loop) learning rate", "inner loop")
    fast_optimizer: str = _f("adam", "fast optimiser: adam or sgd", "inner loop")
    fast_schedule: str = _f("cosine", "inner-loop lr schedule: constant, cosine or linear", "inner loop")
    reuse_noise: bool = _f(False, "reuse one noise draw for all inner steps (published code)", "inner loop")
    accumulate_decoder_grads: bool = _f(
        False, "accumulate decoder grads over the inner trajectory (published code)", "inner loop")
    eval_inner_steps: int | None = _f(None, "inner steps K at validation (none: --inner-steps)",
                                      "inner loop")
    # data
    dataset: str = _f("embedded", "'embedded' (stdlib docstrings), a local text file/dir or a hub name",
                      "data")
    text_field: str = _f("text", "text column of a hub or JSON dataset", "data")
    tokenizer: str = _f("bpe", "'bpe' (train byte-level BPE) or a tokenizer.json path", "data")
    vocab_size: int = _f(512, "BPE vocabulary size to train (a loaded tokenizer keeps its own)", "data")
    block_size: int = _f(128, "tokens per training sequence", "data")
    val_fraction: float = _f(0.05, "fraction of documents held out for validation", "data")
    max_documents: int | None = _f(None, "use at most this many documents (none: all)", "data")
    data_seed: int = _f(0, "seed of the train/validation document split", "data")
    cache_dir: str | None = _f(None, "tokenizer/token cache (none: $LTM_CACHE or ~/.cache/ltm)", "data")
    # slow (outer) optimiser
    batch_size: int = _f(16, "sequences per training batch", "optimisation")
    max_steps: int = _f(500, "outer (slow) steps to train for", "optimisation")
    lr: float = _f(2e-3, "peak slow learning rate (AdamW)", "optimisation")
    min_lr_ratio: float = _f(0.1, "final lr as a fraction of --lr", "optimisation")
    lr_decay_steps: int | None = _f(None, "cosine horizon in steps (none: --max-steps)", "optimisation")
    warmup_steps: int = _f(50, "linear lr warm-up steps", "optimisation")
    weight_decay: float = _f(0.1, "AdamW weight decay on decoder matrices", "optimisation")
    beta1: float = _f(0.9, "AdamW beta1", "optimisation")
    beta2: float = _f(0.95, "AdamW beta2", "optimisation")
    grad_clip: float = _f(1.0, "global gradient-norm clip of the slow step", "optimisation")
    num_particles: int = _f(1, "noise draws averaged in the slow step's ELBO", "optimisation")
    # run
    out_dir: str = _f("runs/ltm-default", "run directory: metrics.jsonl and step_NNNNNN/ checkpoints",
                      "run")
    seed: int = _f(0, "seed of model init, batch order and noise", "run")
    eval_every: int = _f(100, "validate every N steps (0: only at the end)", "run")
    eval_batches: int = _f(4, "validation batches per evaluation", "run")
    save_every: int = _f(100, "checkpoint every N steps (0: only at the end)", "run")
    keep_last: int = _f(2, "keep the last N checkpoints (0: keep all)", "run")
    resume: str | None = _f(None, "continue a run exactly: 'auto' (latest in --out-dir) or a checkpoint",
                            "run")
    init_from: str | None = _f(None, "start from a checkpoint's weights only (fresh optimiser)", "run")
    overwrite: bool = _f(False, "start afresh in an --out-dir that already holds checkpoints", "run")
    device: str = _f("cpu", "torch device", "run")
    threads: int = _f(1, "torch CPU threads (0: one per core); 1 suits small models and shared machines",
                      "run")
    progress: bool = _f(True, "show a progress bar", "run")

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batches >= 1, "eval_batches must be >= 1"),
            (min(self.eval_every, self.save_every, self.keep_last, self.warmup_steps, self.threads) >= 0,
             "eval_every, save_every, keep_last, warmup_steps and threads must be >= 0"),
            (not (self.resume and self.init_from), "give either resume or init_from, not both"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}.")

    # -- converters to the components' own configs ------------------------------------------------

    def decoder_config(self, vocab_size: int) -> DecoderConfig:
        """The decoder's shape; the vocabulary comes from the tokenizer, not from `vocab_size`."""
        return DecoderConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                             n_head=self.n_head, d_model=self.d_model, d_ff=self.d_ff,
                             n_latent=self.n_latent, d_latent=self.d_latent, window=self.window)

    @property
    def eval_steps(self) -> int:
        """Inner steps K at validation and sampling: `eval_inner_steps`, else `inner_steps`."""
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps

    def inner_config(self, steps: int | None = None) -> InnerLoopConfig:
        """Inner-loop settings, with `steps` in place of `inner_steps` when given."""
        return InnerLoopConfig(steps=self.inner_steps if steps is None else steps, lr=self.fast_lr,
                               optimizer=self.fast_optimizer, schedule=self.fast_schedule,
                               reuse_noise=self.reuse_noise,
                               accumulate_decoder_grads=self.accumulate_decoder_grads)

    def slow_config(self) -> SlowConfig:
        return SlowConfig(lr=self.lr, weight_decay=self.weight_decay, betas=(self.beta1, self.beta2),
                          warmup_steps=self.warmup_steps,
                          max_steps=self.lr_decay_steps or self.max_steps,
                          min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip)

    def data_config(self) -> DataConfig:
        return DataConfig(dataset=self.dataset, text_field=self.text_field, tokenizer=self.tokenizer,
                          vocab_size=self.vocab_size, block_size=self.block_size,
                          val_fraction=self.val_fraction, seed=self.data_seed,
                          max_documents=self.max_documents)

    def data_cache_dir(self) -> str:
        """`cache_dir`, else $LTM_CACHE, else $XDG_CACHE_HOME/ltm, else ~/.cache/ltm."""
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        return self.cache_dir or os.environ.get("LTM_CACHE", str(Path(xdg) / "ltm"))

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the config") -> TrainConfig:
        """Build from a mapping of field names (dashes allowed) to values, checking every key."""
        return cls(**coerce_values(values, source))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# -- typing helpers -------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(name: str) -> tuple[type, bool]:
    """(underlying type, whether None is allowed) of field `name`."""
    hint = _HINTS[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got '{text}'")


def _parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"expected a JSON object like '{{\"num_components\": 8}}', got '{text}' "
                         f"({err.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got '{text}'")
    return value


def _convert(name: str, value):
    """Convert `value` (from YAML, JSON or a flag string) to field `name`'s type, or raise ValueError."""
    base, optional = _base_type(name)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError("expected a value, got none")
    if base is bool:
        return value if isinstance(value, bool) else _parse_bool(str(value))
    if base is dict:
        return value if isinstance(value, dict) else _parse_json_object(str(value))
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if base is float:
        try:
            return float(value)  # YAML reads '3e-4' as a string
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def coerce_values(values: dict, source: str) -> dict:
    """Check every key of `values` against the fields and convert its value; name `source` on error."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, _FIELDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "; see python -m ltm.train --help."
            raise ConfigError(f"unknown key '{key}' in {source}{hint}")
        try:
            out[name] = _convert(name, value)
        except ValueError as err:
            raise ConfigError(f"bad value for '{key}' in {source}: {err}.") from None
    return out


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into checked, converted field values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse config file {path}: {str(err).splitlines()[0]}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field names to values.")
    return coerce_values(data, str(path))


# -- argparse generated from the fields -----------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per `TrainConfig` field, grouped by section; defaults suppressed (see `parse_args`)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        section = f.metadata["section"]
        if section not in groups:
            groups[section] = parser.add_argument_group(section)
        base, optional = _base_type(f.name)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = json.dumps(default) if base is dict else default
        help_text = f"{f.metadata['help']} (default: {'none' if default is None else shown})"
        flag = "--" + f.name.replace("_", "-")
        if base is bool:
            groups[section].add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                         default=argparse.SUPPRESS, help=help_text)
            continue
        metavar = {int: "INT", float: "FLOAT", dict: "JSON"}.get(base, "STR")
        groups[section].add_argument(flag, dest=f.name, type=_flag_type(f.name),
                                     metavar=metavar + ("|none" if optional else ""),
                                     default=argparse.SUPPRESS, help=help_text)


def _flag_type(name: str):
    def convert(text: str):
        try:
            return _convert(name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name
    return convert


def build_parser(description: str, prog: str = "python -m ltm.train") -> argparse.ArgumentParser:
    """The training CLI's parser: `--config`, `--print-config` and one flag per field."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of field values; "
                        "flags given on the command line override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    add_config_arguments(parser)
    return parser


def given_values(args: argparse.Namespace) -> dict:
    """Field values from the `--config` file, overridden by the flags given on the command line.

    Defaults are suppressed in the parser, so only flags actually given appear in `args`.
    """
    values = load_config_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in _FIELDS})
    return values


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
