"""`TrainConfig`: the one dataclass behind the CLI flags, config files and saved `config.json`.

Every shared field is a flag (`max_steps` -> `--max-steps`), a key of a YAML/JSON config file and a
key of the `config.json` saved with each checkpoint. Each component of a run reads its own section,
its own dataclass unchanged (`COMPONENTS`): the inner loop (`inner`: `InnerLoopConfig`), early
inference (`early`), the KL control (`kl`), the slow optimiser (`slow`: `SlowConfig`) and the data
(`data`: `DataConfig`). Each model family adds a section named after it, holding its own options
(`ltm.models.Family.Options`):

    inner:
      steps: 4             # on the command line: --inner.steps 4 (or its alias --inner-steps 4)
    model: ponderlm2
    ponderlm2:
      thoughts: 2          # on the command line: --ponderlm2.thoughts 2

An option added to a component's dataclass is a flag, a config key and a saved value at once.
The flat names of earlier versions (`inner_steps`, `fast_lr`, `dataset`, `lr`, ...) stay valid as
aliases (`ALIASES`), on the command line, in config files and in old checkpoints.

Every registered family's section is always present (at its defaults unless given); the run uses
the section of its `model`. Precedence: defaults < `--config` file < command-line flags.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ltm.core.errors import ConfigError
from ltm.data import DataConfig
from ltm.families import FAMILIES, resolve_family
from ltm.inference import EarlyInference, InnerLoopConfig, KLControl, SlowConfig
from ltm.models import DecoderConfig, Family
from ltm.training.distributed import BACKENDS
from ltm.training.precision import PRECISIONS
from ltm.training.run_loggers import parse_log_to
from ltm.training.values import coerce_fields, unknown_key

YAML_HEADER = ("# An ltm training configuration, every key written out by python -m ltm.train "
               "--print-config\n"
               "# (each is explained by --help). Run it with python -m ltm.train --config FILE; flags given\n"
               "# on the command line override it.\n")

# The components' sections: each is the component's own dataclass, read by it unchanged.
COMPONENTS = {"inner": InnerLoopConfig, "early": EarlyInference, "kl": KLControl, "slow": SlowConfig,
              "data": DataConfig}
FREEZE = ("none", "decoder")  # --freeze: which pretrained weights stay fixed
# Flat names (flags, config keys, old checkpoints) and the option each stands for.
ALIASES = {
    "inner_steps": "inner.steps", "fast_lr": "inner.lr", "fast_optimizer": "inner.optimizer",
    "fast_schedule": "inner.schedule", "reuse_noise": "inner.reuse_noise",
    "accumulate_decoder_grads": "inner.accumulate_decoder_grads",
    "early_inner_steps": "early.steps", "early_inference_steps": "early.until",
    "free_bits": "kl.free_bits", "kl_warmup_steps": "kl.warmup_steps",
    "lr": "slow.lr", "weight_decay": "slow.weight_decay", "beta1": "slow.beta1", "beta2": "slow.beta2",
    "warmup_steps": "slow.warmup_steps", "lr_decay_steps": "slow.decay_steps",
    "min_lr_ratio": "slow.min_lr_ratio", "grad_clip": "slow.grad_clip", "new_lr": "slow.new_lr",
    "dataset": "data.dataset", "text_field": "data.text_field", "encoding": "data.encoding",
    "tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size", "block_size": "data.block_size",
    "val_fraction": "data.val_fraction", "max_documents": "data.max_documents", "data_seed": "data.seed",
}


def _f(default, help: str, section: str):
    """A dataclass field with its help text (shown in `--help`) and its help section."""
    meta = {"help": help, "section": section}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _component(name: str, title: str, **defaults):
    """A component's section: an instance of `COMPONENTS[name]` (looked up when it is made, so a
    subclass registered there is used everywhere) with the run's `defaults`, and its help title."""
    return field(default_factory=lambda: COMPONENTS[name](**defaults),
                 metadata={"section": None, "title": title})


@dataclass
class TrainConfig:
    """Everything a training run needs; see `python -m ltm.train --help`.

    Attributes:
        sections: Each family's options by family name (its config section); filled in with
            defaults for every registered family and for the chosen `model`.
    """

    # model
    model: str = _f("ltm", f"model family: {', '.join(FAMILIES)}, or module:Class", "model")
    d_model: int = _f(128, "residual stream width", "model")
    n_layer: int = _f(2, "transformer blocks", "model")
    n_head: int = _f(4, "attention heads per block", "model")
    d_ff: int | None = _f(None, "SwiGLU hidden width (none: 8/3 d_model)", "model")
    window: int | None = _f(None, "sliding self-attention window in tokens (none: full causal)", "model")
    n_kv_head: int | None = _f(None, "key/value heads, grouped-query attention (none: n_head)", "model")
    attn_bias: bool = _f(False, "biases on the query, key and value projections (Qwen2)", "model")
    tie_embeddings: bool = _f(True, "the output head is the token embedding (false: a head of its own)",
                              "model")
    rope_base: float = _f(10000.0, "RoPE frequency base (rope_theta)", "model")
    rope_scaling: dict | None = _f(None, "Llama 3 RoPE scaling, as JSON (none: plain RoPE)", "model")
    norm_eps: float = _f(1e-5, "RMSNorm epsilon", "model")
    vocab_rows: int | None = _f(None, "rows of the token embedding (none: the tokenizer's vocabulary; "
                                "a pretrained checkpoint may have more)", "model")
    freeze: str = _f("none", "decoder: keep the pretrained decoder's weights fixed and train only the "
                     "parts a family adds (cross-attention, router, prior); none: train everything",
                     "model")
    prior: str | None = _f(None, "prior over the thoughts: registry name or module:Class (none: the "
                           "family's own; taken by "
                           f"{', '.join(n for n, f in FAMILIES.items() if f.takes_prior)})", "model")
    prior_kwargs: dict = _f({}, "keyword arguments of the prior, as JSON", "model")
    guide: str | None = _f(None, "guide (approximate posterior): registry name or module:Class (none: "
                           "the family's default)", "model")
    guide_kwargs: dict = _f({}, "keyword arguments of the guide, as JSON", "model")
    # the components' sections (flags --inner.steps, ...; config keys inner: {steps: ...}, ...)
    inner: InnerLoopConfig = _component("inner", "inner loop: fitting q(z|x) per training batch",
                                        steps=4, lr=0.3)
    early: EarlyInference = _component("early", "early inference: a longer inner loop while the "
                                       "decoder is young (against posterior collapse)")
    kl: KLControl = _component("kl", "KL control in the training objective (against posterior "
                               "collapse; every reported bound is the true ELBO)")
    slow: SlowConfig = _component("slow", "slow (outer) optimiser", lr=2e-3, warmup_steps=50)
    data: DataConfig = _component("data", "data")
    eval_inner_steps: int | None = _f(None, "inner steps K at validation (none: --inner.steps)", "run")
    cache_dir: str | None = _f(None, "tokenizer/token cache (none: $LTM_CACHE or ~/.cache/ltm)", "run")
    batch_size: int = _f(16, "sequences per training batch", "run")
    max_steps: int = _f(500, "outer (slow) steps to train for", "run")
    num_particles: int = _f(1, "noise draws averaged in the slow step's ELBO", "run")
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
    init_from_hf: str | None = _f(None, "start from a pretrained Hugging Face Llama or Qwen2 checkpoint "
                                  "(a folder, or a hub id where the network allows): its shape, "
                                  "weights and tokenizer", "run")
    overwrite: bool = _f(False, "start afresh in an --out-dir that already holds checkpoints", "run")
    trust_code: bool = _f(False, "on --resume, allow the checkpoint's config to name its model, prior or "
                          "guide by a module:Class path (importing it runs its code); paths given "
                          "on the command line are always allowed", "run")
    device: str = _f("cpu", "torch device", "run")
    threads: int = _f(1, "torch CPU threads (0: one per core); 1 suits small models and shared machines",
                      "run")
    progress: bool = _f(True, "show a progress bar", "run")
    log_to: str = _f("none", "mirror metrics.jsonl, the config and the git commit to tensorboard "
                     "(OUT_DIR/tensorboard), wandb (offline unless WANDB_MODE=online), both as "
                     "tensorboard,wandb, or none", "run")
    # speed and scale
    precision: str = _f("auto", "fp32, bf16 (autocast; weights, log-probs, KL and losses stay fp32) or "
                        "auto (bf16 where the hardware has native bf16, else fp32)", "speed and scale")
    compile: bool = _f(False, "torch.compile the decoder blocks (first steps pay the compile time)",
                       "speed and scale")
    activation_checkpointing: bool = _f(False, "recompute each decoder block in the backward pass "
                                        "instead of keeping its activations (less memory, about "
                                        "one more forward pass of time)", "speed and scale")
    grad_accum: int = _f(1, "micro-batches per slow step: each process fits and backpropagates "
                         "batch_size / (processes x grad_accum) sequences at a time", "speed and scale")
    fsdp: bool = _f(False, "under torchrun, shard each decoder block, the embeddings and AdamW's "
                    "state over the processes (PyTorch FSDP2) instead of copying them to each; not "
                    "taken from the checkpoint on --resume", "speed and scale")
    dist_backend: str = _f("auto", "torchrun process group: auto (nccl on CUDA, gloo on CPU), gloo or "
                           "nccl", "speed and scale")
    dist_timeout: float = _f(300.0, "seconds a process waits for a silent one before the run stops "
                             "with an error", "speed and scale")

    sections: dict = field(default_factory=dict, metadata={"section": None})

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batches >= 1, "eval_batches must be >= 1"),
            (min(self.eval_every, self.save_every, self.keep_last, self.threads) >= 0,
             "eval_every, save_every, keep_last and threads must be >= 0"),
            (sum(map(bool, (self.resume, self.init_from, self.init_from_hf))) <= 1,
             "give one of resume, init_from and init_from_hf"),
            (self.freeze in FREEZE, f"freeze must be one of {', '.join(FREEZE)}, got '{self.freeze}'"),
            (self.grad_accum >= 1 and self.dist_timeout > 0,
             "grad_accum must be >= 1 and dist_timeout > 0"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got "
                                           f"'{self.precision}'"),
            (self.dist_backend in BACKENDS, f"dist_backend must be one of {', '.join(BACKENDS)}, got "
                                            f"'{self.dist_backend}'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}.")
        for name, cls in COMPONENTS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"config section '{name}' must be a {cls.__name__}, got "
                                  f"{getattr(self, name)!r}.")
            check_numbers(name, dataclasses.asdict(getattr(self, name)))
        self.sections = family_sections(self.model, self.sections)
        self.family.refuse_prior(self.prior, self.prior_kwargs)
        parse_log_to(self.log_to)
        if self.activation_checkpointing and not self.family.recomputes_blocks:
            raise ConfigError(f"--activation-checkpointing does not apply to the {self.model} family "
                              f"(its training pass appends to a KV cache, which recomputing a block "
                              f"would append to twice); train it without the flag.")
        refusal = self.family.fsdp_refusal(self.options) if self.fsdp else None
        if refusal:
            raise ConfigError(f"--fsdp cannot shard the {self.model} family here: {refusal}.")
        remedies = [flag_for(name) for name, on in (("kl.free_bits", self.kl.free_bits > 0),
                                                    ("kl.warmup_steps", self.kl.warmup_steps > 0),
                                                    ("early.steps", self.early.steps is not None)) if on]
        if remedies and self.family.exact_nll:
            raise ConfigError(f"{', '.join(remedies)} act on the KL of a stochastic latent, and "
                              f"family {self.family.name} has none (its NLL is exact); drop them or "
                              f"train a family with a latent such as ltm.")

    # -- the family and its options ---------------------------------------------------------------

    @property
    def family(self) -> type[Family]:
        """The model family class `model` names."""
        return resolve_family(self.model)

    @property
    def options(self):
        """The options section of the chosen family."""
        return self.sections[self.family.name]

    # -- converters to the components' own configs ------------------------------------------------

    def decoder_config(self, vocab_size: int) -> DecoderConfig:
        """The shared decoder shape (the family adds its own parts, e.g. the LTM's latents); the
        vocabulary comes from the tokenizer."""
        return DecoderConfig(vocab_size=self.vocab_rows or vocab_size, block_size=self.data.block_size,
                             n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model,
                             d_ff=self.d_ff, window=self.window, n_kv_head=self.n_kv_head,
                             attn_bias=self.attn_bias, tie_embeddings=self.tie_embeddings,
                             rope_base=self.rope_base, rope_scaling=self.rope_scaling,
                             norm_eps=self.norm_eps)

    @property
    def eval_steps(self) -> int:
        """Inner steps K at validation and sampling: `eval_inner_steps`, else `inner.steps`."""
        return self.inner.steps if self.eval_inner_steps is None else self.eval_inner_steps

    def inner_config(self, steps: int | None = None) -> InnerLoopConfig:
        """The inner loop's section, with `steps` in place of its K when given."""
        return self.inner if steps is None else dataclasses.replace(self.inner, steps=steps)

    def slow_config(self) -> SlowConfig:
        """The slow optimiser's section, its cosine horizon the run's max_steps unless given."""
        slow = self.slow
        return slow if slow.decay_steps is not None else dataclasses.replace(slow, decay_steps=self.max_steps)

    def data_cache_dir(self) -> str:
        """`cache_dir`, else $LTM_CACHE, else $XDG_CACHE_HOME/ltm, else ~/.cache/ltm."""
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        return self.cache_dir or os.environ.get("LTM_CACHE", str(Path(xdg) / "ltm"))

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The shared fields, the components' sections, then each family section that has options."""
        shared = {name: copy.deepcopy(getattr(self, name)) for name in SHARED_FIELDS}
        components = {name: dataclasses.asdict(getattr(self, name)) for name in COMPONENTS}
        nested = {name: dataclasses.asdict(opts) for name, opts in self.sections.items() if fields(opts)}
        return {**shared, **components, **nested}

    def to_yaml(self) -> str:
        """The whole configuration as YAML (what `--print-config` prints and `--config` reads)."""
        return YAML_HEADER + yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the config") -> TrainConfig:
        """Build from field names (dashes allowed, aliases too), the components' sections (options
        not given keep the run's defaults) and family sections, checking every key."""
        values = coerce_values(values, source)
        shared = {k: v for k, v in values.items() if k in SHARED_FIELDS}
        defaults = {f.name: f.default_factory() for f in fields(cls) if f.name in COMPONENTS}
        components = {}
        for name in COMPONENTS:
            given = values.get(name, {})
            check_numbers(name, given)
            try:
                components[name] = dataclasses.replace(defaults[name], **given)
            except ValueError as err:  # the component's own check
                raise ConfigError(f"{name}: {err}") from None
        sections = {k: v for k, v in values.items() if k not in SHARED_FIELDS and k not in COMPONENTS}
        return cls(**shared, **components, sections=sections)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


SHARED_FIELDS = tuple(f.name for f in fields(TrainConfig)
                      if f.name != "sections" and f.name not in COMPONENTS)
_ALIAS_OF = {place: alias for alias, place in ALIASES.items()}  # "slow.lr" -> "lr"

# Numeric options and the range each must lie in (a real one must also be finite; none is allowed
# where the option's type allows it).
NUMBER_RANGES = {
    "slow.lr": ("> 0", lambda v: v > 0), "inner.lr": ("> 0", lambda v: v > 0),
    "slow.new_lr": ("> 0", lambda v: v > 0),
    "slow.min_lr_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "slow.weight_decay": (">= 0", lambda v: v >= 0), "slow.grad_clip": ("> 0", lambda v: v > 0),
    "slow.beta1": ("in [0, 1)", lambda v: 0 <= v < 1), "slow.beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "kl.free_bits": (">= 0", lambda v: v >= 0), "data.val_fraction": ("in [0, 1)", lambda v: 0 <= v < 1),
    "inner.steps": (">= 0", lambda v: v >= 0), "early.steps": (">= 0", lambda v: v >= 0),
    "early.until": (">= 0", lambda v: v >= 0), "kl.warmup_steps": (">= 0", lambda v: v >= 0),
    "slow.warmup_steps": (">= 0", lambda v: v >= 0), "slow.decay_steps": (">= 0", lambda v: v >= 0),
    "data.block_size": (">= 1", lambda v: v >= 1),
}


def key_name(place: str) -> str:
    """A config key as a user may know it: 'inner.lr (fast_lr)' for an aliased option."""
    alias = _ALIAS_OF.get(place)
    return f"{place} ({alias})" if alias else place


def flag_for(place: str) -> str:
    """How a user names an option: `--lr (--slow.lr)` for an aliased one, else `--inner.steps`."""
    flag = "--" + place.replace("_", "-")
    alias = _ALIAS_OF.get(place)
    return f"--{alias.replace('_', '-')} ({flag})" if alias else flag


def check_numbers(section: str, values: dict) -> None:
    """Refuse a learning rate (or other real-valued option of `section`) that is NaN, infinite or
    out of range.

    Raises:
        ConfigError: naming the flag (and the config key), the range and the value given.
    """
    for name, value in values.items():
        place = f"{section}.{name}"
        if place in NUMBER_RANGES and isinstance(value, (int, float)):
            bound, ok = NUMBER_RANGES[place]
            if not (math.isfinite(value) and ok(value)):
                kind = "a whole number" if isinstance(value, int) else "a finite number"
                raise ConfigError(f"{flag_for(place)} must be {kind} {bound} ('{place}' in a config "
                                  f"file), got {value}.")


def family_sections(model: str, given: dict) -> dict:
    """Every registered family's options, and the chosen family's, from `given` over the defaults.

    Args:
        model: The chosen family (a registry name or a `module:Class` path).
        given: Sections by family name: an options dataclass, or a mapping of its field values.

    Raises:
        ConfigError: for an unknown family, a section of no family, or a bad option.
    """
    try:
        chosen = resolve_family(model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if chosen.name in SHARED_FIELDS:
        raise ConfigError(f"model '{model}' is named '{chosen.name}', which is a config field; give the "
                          f"class another `name` (its config-section key).")
    families = dict(FAMILIES)
    if families.setdefault(chosen.name, chosen) is not chosen:
        raise ConfigError(f"model '{model}' is named '{chosen.name}', which a registered family already "
                          f"has; give the class another `name`.")
    unknown = sorted(set(given) - set(families))
    if unknown:
        raise unknown_key(unknown[0], list(families) + list(SHARED_FIELDS), "the config",
                          "a section is named after its family.")
    sections = {}
    for name, family in families.items():
        value = given.get(name, {})
        if not isinstance(value, family.Options):
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{name}' must be a mapping of {name}'s options, "
                                  f"got {value!r}.")
            value = family.Options(**coerce_fields(family.Options, value, "the config", f"{name}."))
        sections[name] = value
    return sections


def coerce_values(values: dict, source: str) -> dict:
    """Check and convert every key of `values`: shared fields, and family sections (mappings).

    Sections of registered families are checked here; a section for a `module:Class` family is
    checked when the config is built.

    Raises:
        ConfigError: naming the key and `source` (a moved key is told where it lives now).
    """
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        known = list(SHARED_FIELDS) + list(COMPONENTS) + list(ALIASES) + list(FAMILIES)
        if name in SHARED_FIELDS:
            out.update(coerce_fields(TrainConfig, {name: value}, source))
            continue
        if name in ALIASES or name in COMPONENTS:
            if name in ALIASES:
                section, option = ALIASES[name].split(".")
                raw = {option: value}
            elif value is None or isinstance(value, dict):
                section, raw = name, value or {}
            else:
                raise ConfigError(f"config section '{key}' in {source} must be a mapping of its "
                                  f"options, e.g. '{name}: {{option: value}}'; got {value!r}.")
            given = coerce_fields(COMPONENTS[section], raw, source, f"{section}.")
            before = out.setdefault(section, {})
            clash = [o for o in given if o in before and before[o] != given[o]]
            if clash:
                raise ConfigError(f"{source} gives {section}.{clash[0]} twice, as {before[clash[0]]!r} "
                                  f"and as {given[clash[0]]!r} (an alias and its section); keep one.")
            before.update(given)
            continue
        if name == "sections" or not (value is None or isinstance(value, dict)):
            if name in FAMILIES:
                raise ConfigError(f"config section '{key}' in {source} must be a mapping of {name}'s "
                                  f"options, e.g. '{name}: {{option: value}}'; got {value!r}.")
            raise unknown_key(key, known, source, "see python -m ltm.train --help.")
        section = value or {}  # 'ponderlm2:' with nothing under it is an empty section
        if name in FAMILIES:
            out[name] = coerce_fields(FAMILIES[name].Options, section, source, f"{name}.")
        elif difflib.get_close_matches(name, FAMILIES, n=1, cutoff=0.8):
            raise unknown_key(key, known, source, "")  # a misspelt family section
        else:
            out[name] = dict(section)  # perhaps a module:Class family's section; checked on build
    return out


def merge_values(base: dict, override: dict) -> dict:
    """`base` updated by `override`, the components' and families' sections merged option by option
    (both as returned by `coerce_values` or `TrainConfig.to_dict`)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in SHARED_FIELDS:
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into checked, converted field values and sections."""
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
