"""The training loop: data, model, guide and the dual-rate optimiser; metrics, validation, checkpoints.

    trainer = Trainer(TrainConfig.from_dict({"max_steps": 100, "out_dir": "runs/x", "inner_steps": 8}))
    trainer.train()  # -> the final validation `ElboBound` (`PrefixPredictive` for a guide without a density)

Resuming (`resume="auto"` or a checkpoint path) restores the parameters, the slow optimiser and its
scheduler, the step, every RNG state and the data order, so the run continues exactly as if it had
never stopped. Validation runs inside its own seeded RNG fork and never disturbs the training stream.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import time
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ltm.core.errors import CheckpointError, ConfigError, Preempted
from ltm.data import BatchIterator, prepare_data
from ltm.inference import DualRateOptimizer
from ltm.inference.bound_results import ELBO_LABEL, JOINT_LABEL, PREFIX_LABEL, ElboBound, PrefixPredictive
from ltm.inference.bounds import default_prefix_len, fresh_noise_elbo, prefix_predictive_perplexity
from ltm.inference.data_parallel import data_parallel
from ltm.inference.diagnostics import diagnostics_skipped, posterior_diagnostics
from ltm.inference.dual_rate import Shard
from ltm.models.pretrained import load_pretrained, read_hf_weights
from ltm.training.build import build_model, build_run_guide
from ltm.training.checkpoint import (
    LATEST_FILE,
    TOKENIZER_FILE,
    latest_checkpoint,
    load_trainer_state,
    load_weights,
    read_config,
    read_manifest,
    read_tokenizer,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir_name,
    step_dirs,
)
from ltm.training.config import TrainConfig, merge_values
from ltm.training.distributed import check_world, init_distributed, torchrun_world
from ltm.training.fsdp import full_model_state, full_optimizer_state, shard_family, shard_optimizer_state
from ltm.training.metrics import METRICS_FILE, MetricsLog
from ltm.training.precision import autocast, compile_decoder, resolve_precision
from ltm.training.preemption import STOP_SIGNALS, StopSignals
from ltm.training.pretrained_start import freeze_pretrained, pretrained_config
from ltm.training.run_lock import RunLock
from ltm.training.run_loggers import open_loggers, parse_log_to
from ltm.training.trusted_code import CODE_FIELDS


def _quiet(message: str) -> None:
    """The log of ranks other than 0: they say nothing (rank 0 speaks for the run)."""


def resume_checkpoint(cfg: TrainConfig) -> Path | None:
    """The step directory `cfg.resume` names: 'auto' -> the latest in out_dir (None if there is none)."""
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(cfg.out_dir)
    return resolve_checkpoint(cfg.resume)


def resolve_with_checkpoint(cfg: TrainConfig, explicit: dict) -> TrainConfig:
    """On resume, start from the checkpoint's config and re-apply only the values given explicitly.

    The checkpoint's config may name its model, prior or guide by a `module:Class` path only with
    `cfg.trust_code`, or when `explicit` gives that same path (the user chose it).
    """
    step_dir = resume_checkpoint(cfg)
    if step_dir is None:
        return cfg
    trusted = True if cfg.trust_code else [explicit[k] for k in CODE_FIELDS if k in explicit]
    saved = read_config(step_dir, trusted).to_dict()
    for start in ("resume", "init_from", "init_from_hf", "overwrite", "trust_code", "fsdp"):
        saved.pop(start, None)  # fsdp: a run may go on under DDP or one process, and back
    saved["out_dir"] = str(step_dir.parent)  # where the checkpoint is now, even if the run moved
    return TrainConfig.from_dict(merge_values(saved, explicit))


class Trainer:
    """Builds everything from a `TrainConfig` and trains it.

    Args:
        cfg: The run's configuration.
        log: Where one-line messages go (default: `tqdm.write`, which keeps the bar intact).
    """

    def __init__(self, cfg: TrainConfig, log=tqdm.write):
        check_world(cfg.batch_size, cfg.grad_accum, torchrun_world()[1], cfg.fsdp)
        self.dist, self.device = init_distributed(cfg.device, cfg.dist_backend, cfg.dist_timeout)
        self.cfg, self.log = cfg, (log if self.dist.is_main else _quiet)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.out_dir = Path(cfg.out_dir)
        self.lock = RunLock(self.out_dir, "training run")  # held by rank 0 while train() runs
        if self.dist.is_main:
            self.lock.check()  # a busy directory fails now, before the set-up work
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        resume_dir = resume_checkpoint(cfg)
        init_dir = resolve_checkpoint(cfg.init_from) if cfg.init_from else None
        self._check_out_dir(resume_dir)
        if cfg.resume == "auto" and resume_dir is None:
            self.log(f"resume auto: no checkpoint in {self.out_dir} yet; starting a new run")
        if init_dir is not None and cfg.data.tokenizer == "bpe":  # keep the token ids the weights know
            read_manifest(init_dir, (TOKENIZER_FILE,))
            data = dataclasses.replace(cfg.data, tokenizer=str(init_dir / TOKENIZER_FILE))
            cfg = self.cfg = cfg.replace(data=data)
            self.log(f"init-from: using the tokenizer of {init_dir}")
        hf_dir = None
        if cfg.init_from_hf and resume_dir is None:
            cfg, hf_dir = pretrained_config(cfg)
            self.cfg = cfg
            self.log(f"init-from-hf: {cfg.init_from_hf} ({hf_dir}): {cfg.n_layer} layers, d_model "
                     f"{cfg.d_model}, {cfg.n_head} heads ({cfg.n_kv_head} key/value), vocabulary "
                     f"{cfg.vocab_rows}, and its tokenizer")
        pyro.set_rng_seed(cfg.seed)
        self.data = self._prepare_data()
        self.model = build_model(cfg, self.data.vocab_size).to(self.device)
        self.guide = build_run_guide(cfg, self.model).to(self.device)
        if cfg.freeze == "decoder":
            frozen = freeze_pretrained(self.model, self.guide)
            self.log(f"freeze decoder: {frozen / 1e6:.2f}M pretrained parameters stay fixed")
        if resume_dir is None:
            self._start_weights(init_dir, hf_dir)  # before sharding, into the whole model
        self.model.decoder.checkpoint_blocks = cfg.activation_checkpointing
        if cfg.compile:
            compile_decoder(self.model)
        self.sharded = shard_family(self.model, self.dist) if cfg.fsdp else None
        self.opt = DualRateOptimizer(self.model, self.guide, cfg.inner_config(), cfg.slow_config(),
                                     num_particles=cfg.num_particles, kl_control=cfg.kl,
                                     early=cfg.early, micro_batches=cfg.grad_accum,
                                     pretrained=self.model.pretrained_names())
        self.model.check_tokenizer(self.data.tokenizer)
        self.batches = BatchIterator(self.data.train, cfg.batch_size, seed=cfg.seed)
        self._fix_val_batches()
        self.metrics = MetricsLog(self.out_dir / METRICS_FILE)
        self.step, self.resumed = 0, False
        if resume_dir is not None:
            try:
                self._resume(resume_dir)
            except CheckpointError as err:
                earlier = [p for _, p in step_dirs(resume_dir.parent) if p.name < resume_dir.name]
                hint = f" An earlier one: --resume {earlier[-1]}." if earlier else ""
                raise CheckpointError(f"{err}{hint}") from None

    # -- set-up -----------------------------------------------------------------------------------

    @property
    def reducer(self):
        """How the ranks sum: FSDP's `ShardedReducer`, else the process group (None on one process)."""
        if self.sharded is not None:
            return self.sharded
        return self.dist if self.dist.enabled else None

    def _start_weights(self, init_dir: Path | None, hf_dir: Path | None) -> None:
        """A new run's weights from --init-from or --init-from-hf (else its random init)."""
        cfg = self.cfg
        if init_dir is not None:
            load_weights(init_dir, self.model, self.guide)
            self.log(f"init-from: loaded the weights of {init_dir} (fresh optimiser, step 0)")
        elif hf_dir is not None:
            new = load_pretrained(self.model, read_hf_weights(hf_dir), cfg.init_from_hf, self.guide)
            count = sum(p.numel() for n, p in self.model.named_parameters() if n in new)
            self.log(f"init-from-hf: loaded the pretrained weights; {count / 1e6:.2f}M new parameters "
                     f"({len(new)} tensors) start from scratch"
                     + (" (the cross-attention's output at zero: step 0 is the pretrained model)"
                        if self.model.sequence_latent else ""))

    def _prepare_data(self):
        """Tokenise (or read from the cache): rank 0 first, then the others read its cache."""
        cfg = self.cfg
        if not self.dist.is_main:
            self.dist.barrier("data preparation on rank 0")
        data = prepare_data(cfg.data, cfg.data_cache_dir())
        if self.dist.is_main:
            self.dist.barrier("data preparation on rank 0")
        return data

    def _fix_val_batches(self) -> None:
        """The fixed validation batches (none with val_fraction=0), of the curriculum's stage."""
        cfg = self.cfg
        self.val_batches = (self.data.val.fixed_batches(cfg.batch_size, cfg.eval_batches)
                            if len(self.data.val) else [])

    def _set_stage(self) -> dict:
        """Move a staged dataset (Coconut's curriculum) to the stage of the next step; its record."""
        if not hasattr(self.data.train, "set_step"):
            return {}
        self.data.train.set_step(self.step)
        if self.data.val.set_step(self.step):
            self._fix_val_batches()
        return {"stage": self.data.train.stage}

    def _shard(self) -> Shard:
        """This process's rows of every global batch (all of them on one process)."""
        rows = self.dist.rows(self.cfg.batch_size)
        return Shard(rows.start, self.cfg.batch_size, self.reducer)

    def _check_out_dir(self, resume_dir: Path | None) -> None:
        """Refuse to start afresh over an existing run unless asked to (nothing is lost by accident)."""
        if resume_dir is not None or not step_dirs(self.out_dir):
            return
        if not self.cfg.overwrite:
            latest = latest_checkpoint(self.out_dir)
            raise ConfigError(f"{self.out_dir} already holds a run (latest checkpoint {latest.name}); "
                              f"continue it with --resume auto, start again with --overwrite (deletes "
                              f"it), or choose another --out-dir.")

    def _clear_out_dir(self) -> None:
        """With --overwrite: remove the old run's checkpoints and metrics, only once set-up worked."""
        for _, p in step_dirs(self.out_dir):
            shutil.rmtree(p)
        for name in (LATEST_FILE, METRICS_FILE):
            (self.out_dir / name).unlink(missing_ok=True)

    def _resume(self, step_dir: Path) -> None:
        tokenizer = read_tokenizer(step_dir)
        if tokenizer.to_str() != self.data.tokenizer.to_str():
            raise CheckpointError(f"the tokenizer in {step_dir} differs from the one prepared for this "
                                  f"run's data; resume with the checkpoint's dataset, tokenizer and "
                                  f"vocab_size (see its config.json).")
        state = load_trainer_state(step_dir)
        load_weights(step_dir, self.model, self.guide)
        try:
            self.opt.optimizer.load_state_dict(state["optimizer"])
            if self.sharded is not None:
                shard_optimizer_state(self.opt.optimizer)  # each rank keeps its shard
            self.opt.scheduler.load_state_dict(state["scheduler"])
            self.batches.load_state_dict(state["data"])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"cannot resume from {step_dir}: {err}") from None
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        later = [p.name for s, p in step_dirs(self.out_dir) if s > self.step]
        if later:
            self.log(f"note: {self.out_dir} holds later checkpoints {later}; they are replaced when "
                     f"this run reaches their steps.")
        self.resumed = True  # train() drops the metrics of steps after this one
        self.log(f"resumed from {step_dir} at step {self.step}")

    # -- the loop ---------------------------------------------------------------------------------

    def validate(self) -> ElboBound | PrefixPredictive | None:
        """Held-out numbers on the fixed validation batches: the exact NLL for a deterministic
        family; for a guide without a tractable density (a MAP point, Langevin samples), which has
        no ELBO, the prefix-predictive NLL with the eval budget K (q fitted on each block's first
        half, the rest scored); else the fresh-noise ELBO bound with the eval budget K, and the
        posterior diagnostics (KL per latent vector, active units, mutual information). Runs in the
        run's precision; under torchrun every process scores its rows and the sums are reduced."""
        if not self.val_batches:
            return None
        with autocast(self.precision, self.device), data_parallel(self.reducer):
            return self._validate()

    def _validate(self) -> ElboBound | PrefixPredictive:
        cfg = self.cfg
        k = cfg.eval_steps
        if not self.guide.has_density:
            return self._validate_prefix(k)
        bound = fresh_noise_elbo(self.model, self.guide, self.val_batches, cfg.inner_config(k),
                                 seed=cfg.seed + self.step)
        record = {key: v for key, v in bound.to_dict().items() if key != "label"}
        if self.model.exact_nll:
            self._write_val(record)
            self.log(f"step {self.step:>6} | val {bound.neg_elbo:.4f} nats/token, perplexity "
                     f"{bound.perplexity_bound:.2f} (exact NLL)")
            return bound
        diagnostics = posterior_diagnostics(self.model, self.guide, self.val_batches,
                                            cfg.inner_config(k), seed=cfg.seed + self.step)
        skipped = diagnostics_skipped(self.model, self.guide)
        extra = {"diagnostics_skipped": skipped} if diagnostics is None else {
            key: getattr(diagnostics, key) for key in ("kl_per_latent", "active_units", "mutual_info")}
        self._write_val({**record, **extra})
        self.log(f"step {self.step:>6} | val {bound.reconstruction:.4f} recon + {bound.kl:.4f} KL = "
                 f"{bound.neg_elbo:.4f} nats/token, perplexity <= {bound.perplexity_bound:.2f} (K={k}, "
                 f"fresh-noise ELBO bound)")
        if diagnostics is not None:
            self.log(f"             {diagnostics.summary()}")
        return bound

    def _write_val(self, record: dict) -> None:
        if self.dist.is_main:
            self.metrics.write({"step": self.step, "split": "val", **record})

    def _validate_prefix(self, k: int) -> PrefixPredictive:
        """The prefix-predictive NLL at K (the guide has no density, so no ELBO), logged as such."""
        prefix_len = default_prefix_len(self.val_batches[0].shape[1])
        score = prefix_predictive_perplexity(self.model, self.guide, self.val_batches, prefix_len,
                                             self.cfg.inner_config(k), seed=self.cfg.seed + self.step)
        record = {key: v for key, v in score.to_dict().items() if key != "label"}
        self._write_val({"protocol": "prefix_predictive", **record})
        self.log(f"step {self.step:>6} | val {score.nll:.4f} nats/token, perplexity {score.perplexity:.2f} "
                 f"of the continuation after P={prefix_len} tokens (K={k}, prefix-predictive NLL; guide "
                 f"{type(self.guide).__name__} has no density, so no ELBO)")
        return score

    def save(self) -> Path:
        """Write the checkpoint of this step (rank 0; every rank calls it under --fsdp, whose
        shards are gathered first) and return its directory."""
        optimizer, weights = self.opt.optimizer.state_dict(), None
        if self.sharded is not None:
            optimizer = full_optimizer_state(self.opt.optimizer, self.dist.is_main)
            weights = full_model_state(self.model, self.dist.is_main)
        path = self.out_dir / step_dir_name(self.step)
        if not self.dist.is_main:
            return path
        state = {"step": self.step, "optimizer": optimizer,
                 "scheduler": self.opt.scheduler.state_dict(), "rng": rng_state(),
                 "data": self.batches.state_dict()}
        extra = {"vocab_size": self.data.vocab_size, "bos_id": self.data.bos_id,
                 "eos_id": self.data.eos_id, "pad_id": self.data.pad_id}
        if self.cfg.init_from_hf:
            extra["init_from_hf"] = self.cfg.init_from_hf  # where the weights came from
        return save_checkpoint(self.out_dir, self.step, self.model, self.cfg, self.data.tokenizer, state,
                               guide=self.guide, keep_last=self.cfg.keep_last, extra=extra,
                               model_state=weights)

    def _latent_record(self, result) -> dict:
        """The inner budget and KL weight of a step, for families with a stochastic latent."""
        if self.model.exact_nll:
            return {}
        return {"inner_steps": result.inner_steps, "kl_weight": result.kl_weight}

    def _loss_record(self, result) -> dict:
        """A step's loss fields for metrics.jsonl: the ELBO's terms and its perplexity bound, or for a
        guide without a density -log p(x, z) at its sample, -log p(x | z) and -log p(z) (no bound)."""
        if self.guide.has_density:
            return {"loss": result.loss, "reconstruction": result.reconstruction, "kl": result.kl,
                    "perplexity_bound": result.perplexity_bound}
        return {"loss": result.loss, "reconstruction": result.reconstruction, "neg_log_prior": result.kl}

    def _postfix(self, result) -> dict:
        """The progress bar's loss fields: NLL and perplexity, the ELBO's terms and its bound, or
        -log p(x, z) at the sample of a guide without a density (not a bound)."""
        if self.model.exact_nll:
            return {"nll": f"{result.loss:.3f}", "ppl": f"{result.perplexity_bound:.1f}"}
        if not self.guide.has_density:
            return {"neg_log_joint": f"{result.loss:.3f}", "recon": f"{result.reconstruction:.3f}",
                    "neg_log_prior": f"{result.kl:.3f}"}
        return {"loss": f"{result.loss:.3f}", "recon": f"{result.reconstruction:.3f}",
                "kl": f"{result.kl:.3f}", "ppl_bound": f"{result.perplexity_bound:.1f}"}

    def _scale_note(self) -> str:
        """How the batch is split: processes and micro-batches (empty on one process, one batch)."""
        d, a = self.dist, self.cfg.grad_accum
        sharded = ", FSDP" if self.sharded is not None else ""
        parts = ([f"{d.world_size} processes ({d.backend}{sharded})"] if d.enabled else []) + (
            [f"{a} micro-batches"] if a > 1 else [])
        return f", batch {self.cfg.batch_size} over {' x '.join(parts)}" if parts else ""

    def _stop_signal(self, stop: StopSignals) -> int | None:
        """The stop signal any process received (SIGTERM before SIGINT), or None; every process
        gets the same answer."""
        if not self.dist.enabled:
            return stop.signum
        seen = torch.tensor([float(stop.signum == s) for s in STOP_SIGNALS], device=self.device)
        self.dist.sum_(seen, "the stop-signal check")
        return next((s for s, n in zip(STOP_SIGNALS, seen.tolist(), strict=True) if n > 0), None)

    def _stop(self, signum: int, saved: Path | None):
        """Save at the current step (rank 0) unless `saved` is its checkpoint already, then raise
        `Preempted` on every process."""
        path = saved or self.out_dir / step_dir_name(self.step)
        if saved is None:
            if self.dist.is_main or self.sharded is not None:
                path = self.save()
            self.dist.barrier(f"the checkpoint of step {self.step} on rank 0")
        name = signal.Signals(signum).name
        raise Preempted(signum, self.step, f"{name}: stopped at step {self.step}, saved {path}; "
                                           f"continue with --resume auto")

    def _due(self, every: int) -> bool:
        return self.step == self.cfg.max_steps or (every > 0 and self.step % every == 0)

    def train(self) -> ElboBound | None:
        """Train to `max_steps`, validating and checkpointing on schedule and at the end.

        Holds the run directory's lock (`RunLock`, rank 0) until it returns: a second process aimed
        at the directory is refused. On SIGTERM or SIGINT it finishes the current step (with its
        scheduled validation), saves a checkpoint there and raises `Preempted` (a second signal
        aborts at once); under torchrun every process stops at the same step.

        Raises:
            Preempted: after saving, when a stop signal arrived.
        """
        if self.dist.is_main:
            self.lock.acquire()
        try:
            with StopSignals() as stop:
                return self._train(stop)
        finally:
            self.metrics.close_mirrors()
            self.lock.release()

    def _train(self, stop: StopSignals) -> ElboBound | None:
        cfg = self.cfg
        if self.step >= cfg.max_steps:
            self.log(f"already at step {self.step} >= max_steps {cfg.max_steps}; nothing to train.")
            return None
        main = self.dist.is_main
        if main and cfg.overwrite and self.step == 0:
            self._clear_out_dir()
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if main and self.step == 0:
            self.metrics.reset()
        elif main and self.resumed:
            self.metrics.truncate_after(self.step)
        if main:
            self.metrics.mirrors = open_loggers(parse_log_to(cfg.log_to), self.out_dir, cfg.to_dict(),
                                                self.step)
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"{cfg.model}: {n_params / 1e6:.2f}M parameters, vocab {self.data.vocab_size}, "
                 f"{len(self.data.train)} train / {len(self.data.val)} val blocks of {cfg.data.block_size} "
                 f"tokens{'' if self.model.exact_nll else f', K={cfg.inner.steps}'}; {self.precision}"
                 f"{self._scale_note()}; writing {self.out_dir}")
        tokens_per_step = cfg.batch_size * cfg.data.block_size
        bound, started, rows, shard = None, time.perf_counter(), self.dist.rows(cfg.batch_size), self._shard()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and main), unit="step",
                   dynamic_ncols=True)
        while self.step < cfg.max_steps:
            start = time.perf_counter()
            stage = self._set_stage()
            batch = next(self.batches)[rows].to(self.device)  # this process's rows (B / W, T+1)
            with autocast(self.precision, self.device):
                result = self.opt.step(batch, shard)
            self.step += 1
            tok_s = tokens_per_step / (time.perf_counter() - start)
            family = self.model.metrics()
            if main:
                self.metrics.write({"step": self.step, "split": "train", **self._loss_record(result),
                                    "lr": result.lr, "grad_norm": result.grad_norm, "tokens_per_s": tok_s,
                                    **family, **self._latent_record(result), **stage})
            bar.set_postfix(**self._postfix(result), tok_s=f"{tok_s:.0f}",
                            **{k: f"{v:.2f}" for k, v in family.items()}, refresh=False)
            bar.update()
            if self._due(cfg.eval_every):
                bound = self.validate()
            saved = None
            if self._due(cfg.save_every):
                saved = self.out_dir / step_dir_name(self.step)
                if main or self.sharded is not None:
                    saved = self.save()
                    self.log(f"step {self.step:>6} | saved {saved}")
                self.dist.barrier(f"the checkpoint of step {self.step} on rank 0")
            if self.step < cfg.max_steps and (signum := self._stop_signal(stop)) is not None:
                bar.close()
                self._stop(signum, saved)
        bar.close()
        protocol = ("exact NLL" if self.model.exact_nll else ELBO_LABEL if self.guide.has_density
                    else PREFIX_LABEL)
        label = f" Validation numbers are the {protocol}." if bound is not None else ""
        if not self.guide.has_density:
            label += f" Training losses are {JOINT_LABEL}."
        self.log(f"done: step {self.step} in {time.perf_counter() - started:.1f} s; checkpoints in "
                 f"{self.out_dir}.{label}")
        return bound
