"""`TrainConfig`: the one dataclass behind the CLI flags, config files and saved `config.json`.

Every shared field is a flag (`inner_steps` -> `--inner-steps`), a key of a YAML/JSON config file
and a key of the `config.json` saved with each checkpoint. Each model family adds a nested section
named after it, holding its own options (`ltm.models.Family.Options`):

    model: ponderlm2
    ponderlm2:
      thoughts: 2          # on the command line: --ponderlm2.thoughts 2

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
from ltm.training.values import coerce_fields, unknown_key

YAML_HEADER = ("# An ltm training configuration, every key written out by python -m ltm.train "
               "--print-config\n"
               "# (each is explained by --help). Run it with python -m ltm.train --config FILE; flags given\n"
               "# on the command line override it.\n")

# Flat keys of earlier versions and where each lives now (a config file naming one is told so).
MOVED_KEYS = {
    "n_latent": ("ltm.n_latent",), "d_latent": ("ltm.d_latent",),
    "thoughts": ("ponderlm2.thoughts", "ponderlm2_stochastic.thoughts", "pause.pauses"),
    "jacobi_sweeps": ("ponderlm2.jacobi_sweeps", "ponderlm2_stochastic.jacobi_sweeps"),
    "max_jacobi_sweeps": ("ponderlm2.max_jacobi_sweeps",), "loops": ("looped.loops",),
    "ponder_passes": ("ponderlm.passes",), "max_latent_steps": ("adaptive_cot.max_steps",),
    "halt_lambda": ("adaptive_cot.halt_lambda",), "halt_beta": ("adaptive_cot.halt_beta",),
    "prune_threshold": ("adaptive_cot.prune_threshold",),
}


def _f(default, help: str, section: str):
    """A dataclass field with its help text (shown in `--help`) and its help section."""
    meta = {"help": help, "section": section}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


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
    prior: str | None = _f(None, "prior over the thoughts: registry name or module:Class (none: the "
                           "family's own; taken by "
                           f"{', '.join(n for n, f in FAMILIES.items() if f.takes_prior)})", "model")
    prior_kwargs: dict = _f({}, "keyword arguments of the prior, as JSON", "model")
    guide: str | None = _f(None, "guide (approximate posterior): registry name or module:Class (none: "
                           "the family's default)", "model")
    guide_kwargs: dict = _f({}, "keyword arguments of the guide, as JSON", "model")
    # inner (fast) loop
    inner_steps: int = _f(4, "inner steps K fitting q(z|x) per training batch", "inner loop")
    fast_lr: float = _f(0.3, "fast (inner-loop) learning rate", "inner loop")
    fast_optimizer: str = _f("adam", "fast optimiser: adam, adamw (the published code's), sgd or natgrad "
                             "(SGD along q's natural gradient)", "inner loop")
    fast_schedule: str = _f("cosine", "inner-loop lr schedule: constant, cosine or linear", "inner loop")
    reuse_noise: bool = _f(False, "reuse one noise draw for all inner steps (published code)", "inner loop")
    accumulate_decoder_grads: bool = _f(
        False, "accumulate decoder grads over the inner trajectory (published code)", "inner loop")
    eval_inner_steps: int | None = _f(None, "inner steps K at validation (none: --inner-steps)",
                                      "inner loop")
    # against posterior collapse (training objective only; every reported bound is the true ELBO)
    free_bits: float = _f(0.0, "KL floor in nats per latent vector, batch-averaged, in the training "
                          "objective (Kingma et al. 2016; 0: off)", "posterior collapse")
    kl_warmup_steps: int = _f(0, "KL weight rises linearly from 0 to 1 over N outer steps (0: off)",
                              "posterior collapse")
    early_inner_steps: int | None = _f(None, "inner steps K during the first "
                                       "--early-inference-steps outer steps (He et al. 2019's "
                                       "aggressive inference as a budget; none: off)",
                                       "posterior collapse")
    early_inference_steps: int = _f(0, "outer steps that use --early-inner-steps", "posterior collapse")
    # data
    dataset: str = _f("embedded", "'embedded' (stdlib docstrings), a local text file/dir or a hub name",
                      "data")
    text_field: str = _f("text", "text column of a hub or JSON dataset", "data")
    encoding: str = _f("utf-8", "text encoding of local .txt, .json(l), .csv and .zip files (e.g. "
                       "latin-1), or a comma list tried in order for each file (utf-8,latin-1)", "data")
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
    trust_code: bool = _f(False, "on --resume, allow the checkpoint's config to name its model, prior or "
                          "guide by a module:Class path (importing it runs its code); paths given "
                          "on the command line are always allowed", "run")
    device: str = _f("cpu", "torch device", "run")
    threads: int = _f(1, "torch CPU threads (0: one per core); 1 suits small models and shared machines",
                      "run")
    progress: bool = _f(True, "show a progress bar", "run")
    # speed and scale
    precision: str = _f("auto", "fp32, bf16 (autocast; weights, log-probs, KL and losses stay fp32) or "
                        "auto (bf16 where the hardware has native bf16, else fp32)", "speed and scale")
    compile: bool = _f(False, "torch.compile the decoder blocks (first steps pay the compile time)",
                       "speed and scale")
    grad_accum: int = _f(1, "micro-batches per slow step: each process fits and backpropagates "
                         "batch_size / (processes x grad_accum) sequences at a time", "speed and scale")
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
            (min(self.eval_every, self.save_every, self.keep_last, self.warmup_steps, self.threads) >= 0,
             "eval_every, save_every, keep_last, warmup_steps and threads must be >= 0"),
            (not (self.resume and self.init_from), "give either resume or init_from, not both"),
            (self.grad_accum >= 1 and self.dist_timeout > 0,
             "grad_accum must be >= 1 and dist_timeout > 0"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got "
                                           f"'{self.precision}'"),
            (self.dist_backend in BACKENDS, f"dist_backend must be one of {', '.join(BACKENDS)}, got "
                                            f"'{self.dist_backend}'"),
            (self.free_bits >= 0 and self.kl_warmup_steps >= 0 and self.early_inference_steps >= 0
             and (self.early_inner_steps or 0) >= 0,
             "free_bits, kl_warmup_steps, early_inner_steps and early_inference_steps must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}.")
        check_numbers(self)
        self.sections = family_sections(self.model, self.sections)
        self.family.refuse_prior(self.prior, self.prior_kwargs)
        remedies = [name for name, on in (("free_bits", self.free_bits > 0),
                                          ("kl_warmup_steps", self.kl_warmup_steps > 0),
                                          ("early_inner_steps", self.early_inner_steps is not None))
                    if on]
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
        return DecoderConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                             n_head=self.n_head, d_model=self.d_model, d_ff=self.d_ff, window=self.window)

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

    def kl_control(self) -> KLControl:
        """Free bits and KL warm-up of the training objective."""
        return KLControl(free_bits=self.free_bits, warmup_steps=self.kl_warmup_steps)

    def early_inference(self) -> EarlyInference:
        """The longer inner loop of the first outer steps."""
        return EarlyInference(steps=self.early_inner_steps, until=self.early_inference_steps)

    def slow_config(self) -> SlowConfig:
        return SlowConfig(lr=self.lr, weight_decay=self.weight_decay, betas=(self.beta1, self.beta2),
                          warmup_steps=self.warmup_steps,
                          max_steps=self.lr_decay_steps or self.max_steps,
                          min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip)

    def data_config(self) -> DataConfig:
        return DataConfig(dataset=self.dataset, text_field=self.text_field, tokenizer=self.tokenizer,
                          vocab_size=self.vocab_size, block_size=self.block_size,
                          val_fraction=self.val_fraction, seed=self.data_seed,
                          max_documents=self.max_documents, encoding=self.encoding)

    def data_cache_dir(self) -> str:
        """`cache_dir`, else $LTM_CACHE, else $XDG_CACHE_HOME/ltm, else ~/.cache/ltm."""
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        return self.cache_dir or os.environ.get("LTM_CACHE", str(Path(xdg) / "ltm"))

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The shared fields, then one nested dict per family section that has options."""
        shared = {name: copy.deepcopy(getattr(self, name)) for name in SHARED_FIELDS}
        nested = {name: dataclasses.asdict(opts) for name, opts in self.sections.items() if fields(opts)}
        return {**shared, **nested}

    def to_yaml(self) -> str:
        """The whole configuration as YAML (what `--print-config` prints and `--config` reads)."""
        return YAML_HEADER + yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the config") -> TrainConfig:
        """Build from field names (dashes allowed) and family sections, checking every key."""
        values = coerce_values(values, source)
        shared = {k: v for k, v in values.items() if k in SHARED_FIELDS}
        return cls(**shared, sections={k: v for k, v in values.items() if k not in SHARED_FIELDS})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


SHARED_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "sections")

# Real-valued fields and the range each must lie in (every one must also be finite).
NUMBER_RANGES = {
    "lr": ("> 0", lambda v: v > 0), "fast_lr": ("> 0", lambda v: v > 0),
    "min_lr_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "weight_decay": (">= 0", lambda v: v >= 0), "grad_clip": ("> 0", lambda v: v > 0),
    "beta1": ("in [0, 1)", lambda v: 0 <= v < 1), "beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "free_bits": (">= 0", lambda v: v >= 0), "val_fraction": ("in [0, 1)", lambda v: 0 <= v < 1),
}


def check_numbers(cfg: TrainConfig) -> None:
    """Refuse a learning rate (or other real-valued setting) that is NaN, infinite or out of range.

    Raises:
        ConfigError: naming the flag (and the config key), the range and the value given.
    """
    for name, (bound, ok) in NUMBER_RANGES.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and ok(value)):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a finite number {bound} ('{name}' in a config file), "
                              f"got {value}.")


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
        if name in MOVED_KEYS:
            section, option = MOVED_KEYS[name][0].split(".")
            flag = f"--{section}.{option}".replace("_", "-")
            raise ConfigError(f"key '{key}' in {source} has moved into its family's config section: "
                              f"{' or '.join(MOVED_KEYS[name])} (in a file a nested section such as "
                              f"'{section}: {{{option}: {value}}}', on the command line {flag} {value}).")
        known = list(SHARED_FIELDS) + list(FAMILIES)
        if name in SHARED_FIELDS:
            out.update(coerce_fields(TrainConfig, {name: value}, source))
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
    """`base` updated by `override`, family sections merged option by option."""
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
