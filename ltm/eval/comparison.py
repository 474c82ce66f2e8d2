"""A comparison: several runs on one dataset, one tokenizer and one token budget, scored alike.

    name: embedded
    out_dir: runs/compare/embedded       # default runs/compare/NAME; one folder per run inside
    common: {dataset: embedded, vocab_size: 512, block_size: 64, batch_size: 16, max_steps: 150}
    eval: {inner_steps: [0, 4, 16, 64], batches: 4, iwae_samples: 8, protocol_steps: 16, seed: 0}
    seeds: 3                             # every run and control with seeds seed, seed+1, seed+2
    controls: [baseline, params, flops, fixed_latent]  # for every run (or a run's own `controls:`)
    runs:
      - {name: ltm, model: ltm, inner_steps: 4, ltm: {n_latent: 4}}
      - {name: p2, model: ponderlm2, controls: [params, flops, inference_flops]}

`common:` and each run hold `TrainConfig` values (family sections nested); a run's values override
the common ones, except the keys every run must share (`SHARED_KEYS`). `load_comparison` builds and
checks every run's `TrainConfig` before anything is trained; a mistake is one sentence naming the
run and the key. A run whose guide has no tractable density (a MAP point, Langevin samples) is
refused: every stochastic run is scored with the fresh-noise ELBO and the importance-weighted
bound, which need log q(z).

Controls (`ltm.eval.controls`) are runs the comparison makes itself from a run: named
`RUN.KIND`, sized once the tokenizer is known (before any training), trained and scored like any
other run; two controls with the same config are one run. With `seeds: N` every run and control
trains N times, seeds differing and nothing else, in `out_dir/RUN/seed_S`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ltm.core.errors import ConfigError
from ltm.core.registry import resolve
from ltm.data.reasoning import is_reasoning_spec, parse_reasoning
from ltm.eval.controls import refuse_control, with_values
from ltm.eval.quick import quick_comparison
from ltm.inference import GUIDES, InnerLoopConfig, LocalGuide
from ltm.inference.bounds import density_refusal
from ltm.training.config import ALIASES, TrainConfig, coerce_values, merge_values

# One dataset, one tokenizer, one token budget: no run may set these on its own (but a run may
# render the common reasoning task's examples its own way: direct, with steps, with a curriculum,
# and size its blocks to its rendering: a reasoning block holds one padded example).
SHARED_KEYS = ("data", "batch_size", "max_steps")  # the data section, each of its options (or alias)
OWNED_KEYS = ("out_dir", "resume", "overwrite", "init_from", "trust_code")  # the comparison sets these itself
TOP_KEYS = ("name", "out_dir", "common", "eval", "runs", "seeds", "controls")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class EvalSettings:
    """How every finished run is scored on the held-out split.

    Attributes:
        inner_steps: Budgets K of the fresh-noise ELBO curve (stochastic families).
        batches: Held-out batches scored (the first ones of the validation split, fixed).
        batch_size: Sequences per batch (none: the runs' batch_size).
        iwae_samples: S of the importance-weighted bound and the prefix-predictive mixture.
        protocol_steps: K at which the importance-weighted and prefix-predictive numbers are taken.
        prefix_len: P of prefix-predictive scoring (none: half the block).
        inner_loop: Inner-loop settings of the evaluation fits, overriding each run's own
            (keys of `InnerLoopConfig`: optimizer, lr, schedule); any q gives a valid bound, so
            the fit used to score may differ from the one used to train. Empty: the run's own.
        long_fit: Inner steps of a long fit whose fresh-noise bound each K is compared with (the
            gap shows how far the K-step fit stops from its own best; none: off).
        seed: Seed of every noise draw.
        task: For runs trained on a reasoning task: `{difficulties: [..], examples: N}` scores each
            run's greedy answers to N test questions per difficulty (`ltm.eval.reasoning_tasks`);
            empty: off.
    """

    inner_steps: list = field(default_factory=lambda: [0, 4, 16, 64])
    batches: int = 4
    batch_size: int | None = None
    iwae_samples: int = 8
    protocol_steps: int = 16
    prefix_len: int | None = None
    long_fit: int | None = None
    inner_loop: dict = field(default_factory=dict)
    seed: int = 0
    task: dict = field(default_factory=dict)

    def check(self, source: str) -> None:
        ks = self.inner_steps
        checks = [
            (isinstance(ks, list) and ks and all(isinstance(k, int) and k >= 0 for k in ks),
             f"inner_steps must be a non-empty list of budgets K >= 0, got {ks!r}"),
            (self.batches >= 1, f"batches must be >= 1, got {self.batches}"),
            (self.batch_size is None or self.batch_size >= 1,
             f"batch_size must be >= 1, got {self.batch_size}"),
            (self.iwae_samples >= 1, f"iwae_samples must be >= 1, got {self.iwae_samples}"),
            (self.protocol_steps >= 0, f"protocol_steps must be >= 0, got {self.protocol_steps}"),
            (self.long_fit is None or self.long_fit >= 1, f"long_fit must be >= 1, got {self.long_fit}"),
            (self.prefix_len is None or self.prefix_len >= 1,
             f"prefix_len must be >= 1, got {self.prefix_len}"),
        ]
        unknown = sorted(set(self.inner_loop) - {"optimizer", "lr", "schedule"})
        checks.append((not unknown, f"inner_loop takes optimizer, lr and schedule, not {unknown}"))
        levels, n = self.task.get("difficulties", []), self.task.get("examples", 100)
        task_ok = (set(self.task) <= {"difficulties", "examples"} and isinstance(levels, list) and levels
                   and all(isinstance(d, int) for d in levels) and isinstance(n, int) and n >= 1)
        checks.append((not self.task or task_ok,
                       f"task takes difficulties (a list of integers) and examples (>= 1), got {self.task}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"eval: {message} (in {source}).")
        try:
            InnerLoopConfig(**self.inner_loop)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"eval: inner_loop {self.inner_loop}: {err} (in {source}).") from None

    def inner(self, config, steps: int) -> InnerLoopConfig:
        """The evaluation fit with `steps` inner steps: the run's inner loop, then `inner_loop`."""
        return dataclasses.replace(config.inner_config(steps), **self.inner_loop)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunSpec:
    """One run of a comparison: its name, the values it overrides, and its whole `TrainConfig`
    (at the comparison's first seed).

    Attributes:
        controls: The control kinds this run asked for (`ltm.eval.controls.CONTROL_KINDS`).
        control_of: For a control: the (run, kind) pairs it serves; empty for a run.
        sizing: For a control: what its shape matched (`ltm.eval.controls.Sized`), for the first
            (run, kind) it serves; `sizing_for` gives each role's.
    """

    name: str
    overrides: dict
    config: TrainConfig
    controls: list[str] = field(default_factory=list)
    control_of: list[tuple[str, str]] = field(default_factory=list)
    sizing: object | None = None
    role_sizings: dict = field(default_factory=dict)  # (run, kind) -> Sized, for every role

    @property
    def is_control(self) -> bool:
        return bool(self.control_of)

    def sizing_for(self, run: str, kind: str):
        """What this control matched as `run`'s control of `kind` (one control may serve several
        roles, e.g. the same vanilla as one run's inference-FLOP match and another's FLOP match)."""
        return self.role_sizings.get((run, kind), self.sizing)


@dataclass
class Instance:
    """One training of a comparison: a run at one seed, in its own folder."""

    run: RunSpec
    seed: int
    dir: Path
    config: TrainConfig
    key: str  # the folder relative to the comparison's: "RUN" or "RUN/seed_S"


@dataclass
class Comparison:
    """A checked comparison: every run's `TrainConfig` built, each run in `out_dir / name` (and
    `out_dir / name / seed_S` with several seeds); controls are added by `add_control`."""

    name: str
    source: str
    out_dir: Path
    common: dict
    eval: EvalSettings
    runs: list[RunSpec]
    seeds: int = 1

    def run_dir(self, run: RunSpec, seed: int | None = None) -> Path:
        """The run's folder at `seed` (default: the first seed)."""
        base = self.out_dir / run.name
        if self.seeds == 1:
            return base
        return base / f"seed_{run.config.seed if seed is None else seed}"

    def seed_values(self) -> list[int]:
        """The seeds every run trains with: the first run's seed and the next `seeds - 1`."""
        first = self.runs[0].config.seed
        return list(range(first, first + self.seeds))

    def instances(self) -> list[Instance]:
        """Every training, seed by seed (a whole comparison at the first seed comes first)."""
        out = []
        for seed in self.seed_values():
            for run in self.runs:
                directory = self.run_dir(run, seed)
                out.append(Instance(run, seed, directory,
                                    run.config.replace(seed=seed, out_dir=str(directory)),
                                    directory.relative_to(self.out_dir).as_posix()))
        return out

    def base_runs(self) -> list[RunSpec]:
        return [r for r in self.runs if not r.is_control]

    def control(self, run: str, kind: str) -> RunSpec | None:
        """The control of `kind` that serves run `run`, once added."""
        return next((r for r in self.runs if (run, kind) in r.control_of), None)

    def add_control(self, run: RunSpec, kind: str, sized) -> RunSpec:
        """Add `run`'s control of `kind` made from `sized.values`; a control with the same config
        as one already added serves both runs."""
        name = f"{run.name}.{kind}"
        config = with_values(run.config, {**sized.values, "out_dir": str(self.out_dir / name)})
        for other in self.runs:
            if other.is_control and run_signature(other.config) == run_signature(config):
                other.control_of.append((run.name, kind))
                other.role_sizings[(run.name, kind)] = sized
                return other
        spec = RunSpec(name, sized.values, config, control_of=[(run.name, kind)], sizing=sized,
                       role_sizings={(run.name, kind): sized})
        self.runs.append(spec)
        return spec


def run_signature(config: TrainConfig) -> str:
    """What a run computes, hashed: its whole config but where it lives."""
    text = repr(sorted((k, repr(v)) for k, v in config.to_dict().items() if k != "out_dir"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mapping(value, what: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} in {source} must be a mapping, got {value!r}.")
    return value


def _unknown(key: str, known, where: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; the keys are {', '.join(known)}"
    return ConfigError(f"unknown key '{key}' {where}{hint}.")


def _refuse_owned(values: dict, where: str) -> None:
    owned = [k for k in values if str(k).replace("-", "_") in OWNED_KEYS]
    if owned:
        raise ConfigError(f"{where} sets {owned[0]}, which the comparison sets itself (each run trains "
                          f"in out_dir/RUN_NAME and resumes automatically); remove it.")


def _eval_settings(values: dict, source: str) -> EvalSettings:
    names = [f.name for f in dataclasses.fields(EvalSettings)]
    for key in values:
        if key not in names:
            raise _unknown(key, names, f"in eval: of {source}")
    try:
        settings = EvalSettings(**values)
    except TypeError as err:
        raise ConfigError(f"eval: in {source}: {err}.") from None
    for name in ("batches", "iwae_samples", "protocol_steps", "seed"):
        if not isinstance(getattr(settings, name), int):
            raise ConfigError(f"eval: {name} must be an integer (in {source}), got "
                              f"{getattr(settings, name)!r}.")
    settings.check(source)
    return settings


def _common_dataset(common: dict):
    """The dataset name `common:` sets (flat or under `data:`), or None."""
    return common.get("dataset", (common.get("data") or {}).get("dataset"))


def _same_examples(common: dict, key, value) -> bool:
    """Whether a run's `dataset` renders the same reasoning examples as the common one (the same task,
    difficulty and examples; written steps, direct answers or a curriculum may differ)."""
    if str(key) == "data" and isinstance(value, dict) and set(value) == {"dataset"}:
        key, value = "dataset", value["dataset"]
    if str(key) != "dataset" or not isinstance(value, str):
        return False
    base = _common_dataset(common)
    if not (isinstance(base, str) and is_reasoning_spec(base) and is_reasoning_spec(value)):
        return False
    a, b = parse_reasoning(base), parse_reasoning(value)
    return ([t.spec for t in a.tasks], a.examples) == ([t.spec for t in b.tasks], b.examples)


def _own_block(common: dict, key, value) -> bool:
    """Whether `key` = `value` sets only the block size of a run on a reasoning task (and perhaps its
    rendering of the same examples): one example per block, padded, so the block only sets the
    padding (a direct answer needs half the block of written steps)."""
    base = _common_dataset(common)
    if not (isinstance(base, str) and is_reasoning_spec(base)):
        return False
    name = str(key).replace("-", "_")
    if name == "data" and isinstance(value, dict) and "block_size" in value:
        return set(value) <= {"block_size", "dataset"} and (
            "dataset" not in value or _same_examples(common, "dataset", value["dataset"]))
    return name in ("block_size", "data.block_size")


def _place(key) -> str:
    """The shared field or section a config key sets: 'vocab_size' (an alias) -> 'data'."""
    name = str(key).replace("-", "_")
    return ALIASES.get(name, name).split(".")[0]


def _control_list(value, where: str) -> list[str]:
    if value is None:
        return []
    if not (isinstance(value, list) and all(isinstance(k, str) for k in value)):
        raise ConfigError(f"controls {where} must be a list of control kinds such as [params, flops], "
                          f"got {value!r}.")
    return list(dict.fromkeys(value))


def _seeds(value, source: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"seeds in {source} must be a whole number >= 1 (runs per seed), got {value!r}.")
    return value


def _run_spec(entry, index: int, common: dict, out_dir: Path, source: str,
              controls: list[str]) -> RunSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"run {index + 1} in {source} must be a mapping with a name, e.g. "
                          f"'- {{name: vanilla, model: vanilla}}'; got {entry!r}.")
    name = entry["name"]
    overrides = {k: v for k, v in entry.items() if k not in ("name", "controls")}
    if not _RUN_NAME.match(name):
        raise ConfigError(f"run name '{name}' in {source} must be a folder name (letters, digits, "
                          f"'_', '.', '-').")
    where = f"run '{name}' of {source}"
    shared = [k for k in overrides if _place(k) in SHARED_KEYS and not _same_examples(common, k, overrides[k])
              and not _own_block(common, k, overrides[k])]
    if shared:
        key = shared[0]
        raise ConfigError(f"runs in one comparison must share the data section, batch_size and max_steps "
                          f"(one dataset, one tokenizer, one token budget); run '{name}' sets {key} to "
                          f"{overrides[key]!r} in {source}: set it under common: for every run, or "
                          f"compare in another file.")
    _refuse_owned(overrides, where)
    try:
        values = merge_values(common, coerce_values(overrides, where))
        values.update(out_dir=str(out_dir / name), resume="auto")
        config = TrainConfig.from_dict(values, where)
    except (ConfigError, ValueError) as err:
        message = str(err).strip().splitlines()[0]
        raise ConfigError(message if f"run '{name}'" in message else f"{where}: {message}") from None
    _refuse_density_free(config, where)
    own = _control_list(entry.get("controls"), f"of {where}") if "controls" in entry else None
    kinds = controls if own is None else own
    if own is None and config.family.is_baseline:
        kinds = []  # the comparison-wide controls are for the runs a vanilla decoder controls
    for kind in kinds:
        refuse_control(kind, config, name)
    return RunSpec(name, overrides, config, controls=kinds)


def _refuse_density_free(config: TrainConfig, where: str) -> None:
    """Refuse a stochastic run whose guide has no tractable density (it has no ELBO to compare)."""
    spec = config.guide or config.family.default_guide
    try:
        guide = resolve(spec, GUIDES, "guide", LocalGuide)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if not config.family.exact_nll and not guide.has_density:
        raise ConfigError(f"{where}: " + density_refusal(
            f"'{spec}'", "comparison's fresh-noise ELBO and importance-weighted bound",
            "train it alone and score it with python -m ltm.evaluate (prefix-predictive NLL)"))


def parse_comparison(data, source: str, out_dir: str | Path | None = None) -> Comparison:
    """Check a comparison's mapping (as read from `source`) and build every run's `TrainConfig`;
    `out_dir`, when given, replaces the mapping's."""
    data = _mapping(data, "a comparison", source)
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(key, TOP_KEYS, f"in {source}")
    name = str(data.get("name") or Path(source).stem)
    out_dir = Path(out_dir or data.get("out_dir") or Path("runs") / "compare" / name)
    common_raw = _mapping(data.get("common"), "common:", source)
    _refuse_owned(common_raw, f"common: of {source}")
    common = coerce_values(common_raw, f"common: of {source}")
    settings = _eval_settings(_mapping(data.get("eval"), "eval:", source), source)
    seeds = _seeds(data.get("seeds"), source)
    controls = _control_list(data.get("controls"), f"in {source}")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source} names no runs: give runs: as a non-empty list, e.g. "
                          f"'- {{name: vanilla, model: vanilla}}'.")
    runs, seen = [], set()
    for i, entry in enumerate(entries):
        run = _run_spec(entry, i, common, out_dir, source, controls)
        if run.name in seen:
            raise ConfigError(f"run name '{run.name}' appears twice in {source}; each run needs its own "
                              f"name (it is its folder in {out_dir}).")
        seen.add(run.name)
        runs.append(run)
    first = runs[0].config
    if first.data.val_fraction <= 0:
        raise ConfigError(f"common: val_fraction in {source} must be > 0: the runs are scored on the "
                          f"held-out split.")
    if settings.prefix_len is not None and settings.prefix_len > first.data.block_size:
        raise ConfigError(f"eval: prefix_len {settings.prefix_len} in {source} leaves no continuation "
                          f"to score in blocks of block_size {first.data.block_size} + 1 tokens.")
    names = {n for r in runs for n in (r.name, *(f"{r.name}.{k}" for k in r.controls))}
    if len(names) < len(runs) + sum(len(r.controls) for r in runs):
        raise ConfigError(f"a run name in {source} equals another run's control (RUN.KIND); rename it.")
    return Comparison(name, source, out_dir, common, settings, runs, seeds)


def load_comparison(path: str | Path, out_dir: str | Path | None = None, quick: bool = False) -> Comparison:
    """Read and check a comparison YAML (or JSON) file (see the module docstring); `out_dir`, when
    given, replaces the file's; `quick` shrinks it to a first look (`ltm.eval.quick`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"comparison config {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse comparison config {path}: {str(err).splitlines()[0]}.") from None
    if quick and isinstance(data, dict):
        data = quick_comparison(data)
    return parse_comparison(data, str(path), out_dir)
