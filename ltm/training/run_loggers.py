"""Mirrors of `metrics.jsonl` for people who watch curves: TensorBoard and Weights & Biases.

    python -m ltm.train --log-to tensorboard          # event files in OUT_DIR/tensorboard
    tensorboard --logdir runs/
    python -m ltm.train --log-to wandb                # offline (OUT_DIR/wandb); WANDB_MODE=online syncs

Every record written to `metrics.jsonl` goes to each logger as well: its numbers as scalars named
`split/key` (`train/loss`, `val/elbo`, ...) at the record's step. Each logger also gets the run's
whole configuration, the ltm version and the git commit of the code that ran. A resumed run starts
its curves again at the checkpoint's step (TensorBoard's `purge_step`; wandb resumes the same run).
The packages are optional extras: `pip install "ltm[tensorboard]"`, `pip install "ltm[wandb]"`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import secrets
import subprocess
from pathlib import Path

import yaml

from ltm.core.errors import ConfigError

LOGGERS = ("tensorboard", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def parse_log_to(value: str) -> tuple[str, ...]:
    """The loggers of a `--log-to` value ("none", "tensorboard", "wandb" or a comma list), each
    checked to be known and installed.

    Raises:
        ConfigError: an unknown name, or one whose package is not installed.
    """
    names = tuple(n.strip() for n in value.split(",") if n.strip() and n.strip() != "none")
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--log-to {name!r} is not a logger ltm knows; use none, "
                              f"{', '.join(LOGGERS)}, or a comma list of them.")
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ConfigError(f"--log-to {name} needs the {_PACKAGES[name]} package, which is not "
                              f"installed; pip install \"ltm[{name}]\" (or drop --log-to {name}).")
    return names


def source_commit() -> str | None:
    """The git commit of the ltm code that runs (with "-dirty" when it has uncommitted changes),
    or None when it is not a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def run_info() -> dict:
    """What identifies the code of a run: the ltm version and the git commit."""
    try:
        version = importlib.metadata.version("ltm")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"ltm_version": version, "git_commit": source_commit()}


def _scalars(record: dict) -> dict[str, float]:
    """The record's finite numbers as {"split/key": value} (the step and the split are the axes)."""
    split = record.get("split", "train")
    return {f"{split}/{k}": float(v) for k, v in record.items()
            if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


class TensorBoardLogger:
    """Scalars and the configuration in TensorBoard event files under `out_dir/tensorboard`.

    Args:
        out_dir: The run directory.
        config: The run's configuration (`TrainConfig.to_dict()`).
        start_step: The step the run starts from: events of later steps (from a run that went on
            past its last checkpoint) are purged.
    """

    def __init__(self, out_dir: Path, config: dict, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"),
                                    purge_step=start_step + 1 if start_step else None)
        info = run_info()
        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```",
                             start_step)
        self.writer.add_text("run", "\n\n".join(f"{k}: {v}" for k, v in info.items()), start_step)

    def write(self, record: dict) -> None:
        for name, value in _scalars(record).items():
            self.writer.add_scalar(name, value, record.get("step", 0))

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """The same in a Weights & Biases run, offline unless `WANDB_MODE` says otherwise; the run's id
    is kept in `out_dir/wandb_run_id`, so a resumed training continues the same wandb run."""

    def __init__(self, out_dir: Path, config: dict, start_step: int = 0):
        import wandb

        id_file = Path(out_dir) / "wandb_run_id"
        run_id = id_file.read_text().strip() if start_step and id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ltm"), id=run_id, resume="allow",
                              dir=str(out_dir), name=Path(out_dir).name,
                              mode=os.environ.get("WANDB_MODE", "offline"),
                              config={**config, **run_info()})

    def write(self, record: dict) -> None:
        self.run.log(_scalars(record), step=record.get("step", 0))

    def close(self) -> None:
        self.run.finish()


def open_loggers(names: tuple[str, ...], out_dir: Path, config: dict, start_step: int = 0) -> list:
    """One logger per name of `parse_log_to`."""
    kinds = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
    return [kinds[name](out_dir, config, start_step) for name in names]
