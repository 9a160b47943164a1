"""The training loop: `run_training(cfg)` from one process or from every torchrun worker.

    run_training
      init_distributed -> setup_logging -> banner
      Trainer.__init__   data (rank 0 first), policy (seeded, identical on all ranks),
                         precision, strategy (training.strategy: ddp | fsdp2 | deepspeed wraps
                         the policy), AdamW + warmup/cosine, checkpoint manager, resume, tracker
      Trainer.fit        for each epoch: sampler.set_epoch(epoch, start_batch) -> windows of
                         `gradient_accumulation_steps` micro-batches -> train_step -> after_step
                         (log | validate + best/ | checkpoint | preemption), then final/ + summary
      teardown_distributed (also on errors)

Counting: `step` is the number of optimizer steps done. An epoch has `micro_per_epoch` per-rank
micro-batches; they are cut into windows of `gradient_accumulation_steps`, and the last window of
an epoch may be shorter: it still makes an optimizer step, and its loss is divided by its ACTUAL
length (so every step's gradient is a mean over the samples it saw, never shrunk by a missing
micro-batch). `cfg.total_steps` counts that partial window too.

Determinism: the model is built right after seeding with `training.seed` (the same on every rank;
DDP also broadcasts rank 0's weights), then each rank reseeds with `seed + rank` so dropout masks
differ across ranks. Creating a DataLoader iterator draws a seed from the global torch RNG; it is
done inside `fork_rng` so the training RNG stream does not depend on when iterators are created
(a resumed run creates one mid-epoch), and validation runs inside `fork_rng` too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from atlas.checkpoint.lock import run_dir_lock
from atlas.checkpoint.manager import CheckpointManager, SaveReason, load_weights, resolve_resume
from atlas.checkpoint.state import RNGState, TrainProgress
from atlas.config.loader import save_config
from atlas.config.schema import AtlasConfig
from atlas.distributed.compile import compile_blocks
from atlas.distributed.env import DistInfo, all_reduce_mean, init_distributed, teardown_distributed
from atlas.distributed.strategy import build_strategy
from atlas.errors import user_errors
from atlas.eval.metrics import GROUP_KEYS, group_lines
from atlas.eval.offline import evaluate_policy
from atlas.logs import setup_logging
from atlas.runtime import resolve_precision, seed_everything
from atlas.training.build import build_model, build_training_data, log_banner
from atlas.training.numerics import FiniteGuard, check_validation_loss
from atlas.training.optim import (
    build_optimizer,
    build_scheduler,
    current_lrs,
)
from atlas.training.preemption import PreemptionHandler
from atlas.training.preflight import check_inputs
from atlas.training.rollouts import TrainingRollouts
from atlas.training.tracking import RunTracker, StepMeter, check_wandb

log = logging.getLogger(__name__)


def run_training(cfg: AtlasConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train `cfg` in this process (a world of one, or one torchrun worker); returns the summary.

    The process group is destroyed on every exit path. An exception propagates (non-zero exit):
    torchrun then stops the other workers, see atlas/distributed/ddp.py for why nobody hangs.
    """
    dist = init_distributed(cfg.training.dist_timeout_minutes)
    try:
        check_inputs(cfg)  # every path the run reads, before the run directory is created
        # One writer per run directory: locked before anything (even the log) is written there.
        with run_dir_lock(cfg.checkpoint.save_dir, dist):
            setup_logging(dist.rank, cfg.checkpoint.save_dir)
            log_banner(dist)
            trainer = Trainer(cfg, dist, progress=progress)
            try:
                return trainer.fit()
            finally:
                trainer.close()
    except BaseException as e:
        if not isinstance(e, (*user_errors(), FloatingPointError)):  # those: one line, by the CLI
            log.exception("Training stopped by an error on rank %d", dist.rank)
        raise
    finally:
        teardown_distributed()


class Trainer:
    """Everything one training run holds; `fit()` runs it to the end (or to a preemption)."""

    def __init__(self, cfg: AtlasConfig, dist: DistInfo, *, progress: bool = True) -> None:
        self.created = time.perf_counter()
        t = cfg.training
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.run_dir = Path(cfg.checkpoint.save_dir)
        check_wandb(cfg)
        if t.cpu_threads is not None:
            torch.set_num_threads(t.cpu_threads)
        seed_everything(t.seed)
        self.data = build_training_data(cfg, dist)
        self.policy = build_model(cfg, self.data.normalizer, self.device)
        self.policy.cache_instructions(self.data.train_set.tasks)
        self.precision = resolve_precision(t.mixed_precision, self.device)
        self.strategy = build_strategy(cfg, dist, self.precision.name)
        resume = resolve_resume(cfg, dist)
        if cfg.checkpoint.load_from and resume is None:
            load_weights(cfg.checkpoint.load_from, self.policy, dist)
        if t.compile:
            compile_blocks(self.policy)  # per block, in place: keys and methods stay the policy's
        self.micro_per_epoch = len(self.data.train_loader)
        self.total_steps = cfg.total_steps(self.micro_per_epoch)
        self._build_optimization()
        self.progress = TrainProgress()
        states = {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "progress": self.progress,
            "sampler": self.data.sampler,
            "rng": RNGState(),
        }
        self.ckpt = CheckpointManager(cfg, dist, self.policy, states, self.strategy)
        seed_everything(t.seed + dist.rank)  # per-rank streams (dropout); a resume restores them
        if resume is not None:
            self.ckpt.load(resume, verified=True)
        if dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        self.tracker = RunTracker(
            cfg,
            dist,
            total_steps=self.total_steps,
            start_step=self.progress.step,
            progress=progress,
        )
        self.meter = StepMeter(self.device)
        self.guard = FiniteGuard(self.device, check_grad_norm=not self.scaler.is_enabled())
        self.rollouts = TrainingRollouts(cfg, dist)
        self.preemption = PreemptionHandler()
        self.last_val: dict[str, Any] | None = None
        self._last_val_step = -1
        self._log_plan()

    def _log_plan(self) -> None:
        """One line saying what this run will do."""
        log.info(
            "Run: %d optimizer steps (%d micro-batches/epoch/rank, accumulation %d), effective "
            "batch %d, precision %s, run dir %s",
            self.total_steps,
            self.micro_per_epoch,
            self.cfg.training.gradient_accumulation_steps,
            self.cfg.effective_batch_size(self.dist.world_size),
            self.precision.name,
            self.run_dir,
        )

    def _build_optimization(self) -> None:
        """Wrap (DDP / FSDP2 / DeepSpeed), then AdamW, the warmup/cosine schedule, the scaler."""
        cfg = self.cfg
        # The policy as the strategy runs it (DDP / FSDP2 / DeepSpeed wrapper); self.policy stays
        # the plain module (exports, rollouts, validation).
        self.wrapped = self.strategy.wrap(self.policy)  # FSDP2 shards the policy's parameters here
        self.optimizer = build_optimizer(self.policy, cfg, self.dist.world_size, self.device)
        self.wrapped = self.strategy.prepare(self.wrapped, self.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.scaler = self.strategy.build_scaler(self.precision.needs_scaler)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to `total_steps` (or until preempted); returns the summary."""
        start, start_step = time.perf_counter(), self.progress.step
        start_samples, setup_s = self.progress.samples_seen, start - self.created
        self.wrapped.train()
        stopped = False
        with self.tracker.console():
            while self.progress.step < self.total_steps and not stopped:
                stopped = self._run_epoch()
        if not stopped:
            self.ckpt.save(self.progress.step, SaveReason.FINAL)
            self.ckpt.export("final")
        elapsed = time.perf_counter() - start
        summary = self._summary(elapsed, setup_s, start_step, start_samples, stopped)
        self.tracker.finish(summary)
        return summary

    def _run_epoch(self) -> bool:
        """Windows of micro-batches until the epoch (or the run) ends; True when preempted."""
        p, accum = self.progress, self.cfg.training.gradient_accumulation_steps
        self.data.sampler.set_epoch(p.epoch, p.batch_in_epoch, self.cfg.data.batch_size)
        with torch.random.fork_rng(devices=[]):  # iter() draws a worker seed from the global RNG
            batches = iter(self.data.train_loader)
        epoch = p.epoch  # _after_step moves p.epoch on after the epoch's last window
        while p.epoch == epoch and p.step < self.total_steps:
            n = min(accum, self.micro_per_epoch - p.batch_in_epoch)
            samples = self.train_step(batches, n)
            if self._after_step(n, samples):
                return True
        return False

    def train_step(self, batches: Iterator[dict[str, Any]], n: int) -> int:
        """One optimizer step over the next `n` micro-batches; returns the samples (this rank).

        zero_grad -> n x (forward, backward of loss / n; DDP syncs only on the last) ->
        unscale + clip -> step -> schedule. The strategy (DDP, FSDP2, DeepSpeed) carries out
        each stage; the arithmetic is the same for all.
        """
        strategy = self.strategy
        strategy.zero_grad(self.wrapped, self.optimizer)
        samples, step_loss = 0, torch.zeros((), device=self.device)
        for i in range(n):
            batch = self.meter.timed_next(batches)
            with strategy.micro_batch(self.wrapped, last=i == n - 1):
                with self.precision.autocast():
                    loss, metrics = self.wrapped(batch)
                strategy.backward(self.wrapped, loss / n, self.scaler)
            self.meter.add_micro(metrics)
            step_loss = step_loss + loss.detach()
            samples += batch["actions"].shape[0]
        lrs = current_lrs(self.optimizer)  # the LRs this update uses (set by the last schedule)
        # unscale (fp16) -> clip to max_grad_norm (None: measure only) -> step; pre-clip norm
        max_norm = self.cfg.training.max_grad_norm
        grad_norm = strategy.optimizer_step(
            self.wrapped, self.optimizer, self.scaler, self.trainable, max_norm
        )
        self.scheduler.step()
        self.meter.add_step(grad_norm, lrs, samples)
        self.guard.record(self.progress.step + 1, step_loss, grad_norm)  # on the device: no sync
        return samples

    def _after_step(self, n: int, samples: int) -> bool:
        """Counters, then the periodic work of this step; True when the run must stop now."""
        p, t = self.progress, self.cfg.training
        epoch = p.epoch  # the epoch the step trained on (for the records)
        p.step += 1
        p.batch_in_epoch += n
        p.samples_seen += samples * self.dist.world_size  # ranks consume equal batch sizes
        epoch_end = p.batch_in_epoch >= self.micro_per_epoch
        if epoch_end:
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
        self.tracker.advance()
        validate = p.step % t.val_interval == 0 or epoch_end or p.step == self.total_steps
        if validate or self._reads_or_writes(p.step):  # no sync on the other steps
            self.guard.check(self.dist, self.run_dir)
        if p.step % t.log_interval == 0:
            self._log(epoch)
        with self.meter.paused():
            if validate:
                self.validate(epoch)
            if self.rollouts.due(p.step):
                result = self.rollouts.run(
                    p.step, self.policy, self.strategy.gathered(self.wrapped)
                )
                self.tracker.log_rollout(p.step, epoch, result)
            self.ckpt.save(p.step, SaveReason.INTERVAL)
            if epoch_end:  # saved when checkpoint.save_on_epoch_end (once per step at most)
                self.ckpt.save(p.step, SaveReason.EPOCH_END)
        if self.preemption.should_stop(self.dist):  # all ranks agree on the same step
            self.guard.check(self.dist, self.run_dir)
            self.ckpt.save(p.step, SaveReason.PREEMPTION)
            log.warning("Preempted at step %d: checkpoint saved; resume with --resume auto", p.step)
            return True
        return False

    def _reads_or_writes(self, step: int) -> bool:
        """Whether this step logs, saves at its interval or rolls out (validation steps, epoch
        ends and the last step included by the caller): where the finite guard is read."""
        t, c = self.cfg.training, self.cfg.checkpoint
        return step % t.log_interval == 0 or step % c.save_interval == 0 or self.rollouts.due(step)

    # -- periodic work ------------------------------------------------------------------------

    def _log(self, epoch: int) -> None:
        """Mean metrics of the window since the last log, averaged across ranks."""
        local = self.meter.summarize()
        peak = local.pop("peak_mem_gib", None)  # this rank's (CUDA only), not a mean
        metrics = all_reduce_mean(local, self.device)
        metrics["samples_per_s"] *= self.dist.world_size  # mean per rank -> whole job
        if peak is not None:
            metrics["peak_mem_gib"] = peak
        self.tracker.log_train(self.progress.step, epoch, metrics)

    def validate(self, epoch: int) -> dict[str, Any] | None:
        """Validation metrics on every rank's shard; exports best/ when the loss improves."""
        p = self.progress
        if self.data.val_loader is None or self._last_val_step == p.step:
            return self.last_val
        # fork_rng: validation leaves the training RNG untouched; gathered: FSDP2 gathers its
        # shards once, since ranks may hold different numbers of validation batches.
        with torch.random.fork_rng(devices=[]), self.strategy.gathered(self.wrapped):
            result = evaluate_policy(
                self.policy,
                self.data.val_loader,
                self.data.normalizer,
                self.device,
                self.precision,
                task_names=self.data.train_set.tasks,
            )
        self.last_val, self._last_val_step = result, p.step
        self.tracker.log_val(p.step, epoch, result)
        check_validation_loss(result["loss"], p.step, self.run_dir)
        if result["loss"] < p.best_val_loss:  # the same reduced value on every rank
            p.best_val_loss, p.best_step = result["loss"], p.step
            self.ckpt.export("best")
        return result

    def _summary(
        self, elapsed: float, setup_s: float, start_step: int, start_samples: int, stopped: bool
    ) -> dict[str, Any]:
        """This launch's numbers (a resumed run counts its own time and throughput)."""
        p, val = self.progress, self.last_val or {}
        steps, samples = p.step - start_step, p.samples_seen - start_samples
        summary = {
            "status": "preempted" if stopped else "completed",
            "total_time_s": round(setup_s + elapsed, 2),
            "setup_time_s": round(setup_s, 2),
            "train_time_s": round(elapsed, 2),
            "optimizer_steps": p.step,
            "epochs_completed": p.epoch,
            "samples_seen": p.samples_seen,
            "best_val_loss": p.best_val_loss if math.isfinite(p.best_val_loss) else None,
            "best_step": p.best_step if p.best_step >= 0 else None,
            "final_val_loss": val.get("loss"),
            "mean_action_val_loss": val.get("mean_action_loss"),
            **{f"val_{k}": val.get(k) for k in GROUP_KEYS},
            "throughput_samples_per_s": round(samples / elapsed, 2) if elapsed > 0 else None,
            "throughput_steps_per_s": round(steps / elapsed, 3) if elapsed > 0 else None,
            "world_size": self.dist.world_size,
            "effective_batch_size": self.cfg.effective_batch_size(self.dist.world_size),
            "run_dir": str(self.run_dir),
        }
        log.info("Training summary:\n%s", format_summary(summary))
        return summary

    def close(self) -> None:
        """Release signal handlers and the tracker's files (every exit path)."""
        self.preemption.uninstall()
        self.tracker.close()


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as aligned `key: value` lines, then the mean-action comparison spelled out:
    the loss, and per action group (position last: the headline, see atlas.eval.metrics)."""
    lines = [f"  {k}: {v}" for k, v in summary.items()]
    final, base = summary.get("final_val_loss"), summary.get("mean_action_val_loss")
    if final is not None and base:
        lines.append(
            f"  final val loss {final:.4f} vs {base:.4f} for always predicting the mean training "
            f"action ({100 * final / base:.1f}%)"
        )
    if summary.get("val_position_l1") is not None:
        groups = group_lines({k: summary[f"val_{k}"] for k in GROUP_KEYS})
        lines += [f"  val {line}" for line in groups[::-1]]
    return "\n".join(lines)
