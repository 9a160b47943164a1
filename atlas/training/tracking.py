"""Where the numbers of a run go: metrics.jsonl, TensorBoard, W&B, the progress bar, plots, report.

`RunTracker` is called on every rank and does its work on rank 0 only (the gating lives here, not
at call sites). Its outputs in the run directory (`checkpoint.save_dir`):

    metrics.jsonl        one JSON object per line: train records {"split": "train", "step",
                         "epoch", "loss", "lr", ...} every log_interval steps and validation
                         records {"split": "val", "step", "epoch", "val_loss", ...}
    tensorboard/         event files (`tensorboard --logdir <save_dir>/tensorboard`)
    wandb/, wandb_run_id.txt   W&B files (when logging.wandb.enabled); the stored id makes a
                         resumed run continue the same W&B run
    summary.json         the end-of-run summary
    plots/*.png          train & val loss, learning rate, throughput vs step
    report.md            the summary table and the plots

A resumed run first drops the records past the step it resumes from (they belong to the part of
the interrupted run that the checkpoint does not contain), so every step appears once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from atlas.config.loader import to_dict
from atlas.config.schema import AtlasConfig
from atlas.distributed.env import DistInfo
from atlas.training.report import make_plots, read_metrics, write_report

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
WANDB_ID_FILE = "wandb_run_id.txt"


def check_wandb(cfg: AtlasConfig) -> None:
    """Fail before any heavy work (on every rank alike) if W&B is enabled but not installed."""
    if cfg.logging.wandb.enabled and importlib.util.find_spec("wandb") is None:
        raise RuntimeError(
            "logging.wandb.enabled is true but the wandb package is not installed: "
            "pip install 'atlas-vla[wandb]', or --set logging.wandb.enabled=false"
        )


class RunTracker:
    """Metrics sinks of one run; every method is a no-op on ranks other than 0."""

    def __init__(
        self,
        cfg: AtlasConfig,
        dist: DistInfo,
        *,
        total_steps: int,
        start_step: int,
        progress: bool,
    ) -> None:
        self.enabled = dist.is_main
        self.run_dir = Path(cfg.checkpoint.save_dir)
        self.total_steps = total_steps
        self._tb: Any = None
        self._wandb: Any = None
        self._bar: Any = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        _truncate_metrics(self.metrics_path, keep_until=start_step)
        if cfg.logging.tensorboard:
            # Imported only when enabled: it loads TensorBoard's protobuf stack (seconds).
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events past the resume point, as _truncate_metrics does.
            purge = start_step + 1 if start_step > 0 else None
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge)
        if cfg.logging.wandb.enabled:
            self._wandb = _init_wandb(cfg, self.run_dir)
        if progress and cfg.logging.progress and sys.stderr.isatty():
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )

    def console(self) -> contextlib.AbstractContextManager[Any]:
        """Context for the training loop: log lines go above the progress bar, not through it."""
        if self._bar is None:
            return contextlib.nullcontext()
        return logging_redirect_tqdm()

    # -- per step ------------------------------------------------------------------------

    def advance(self, steps: int = 1) -> None:
        """Move the progress bar (called after every optimizer step)."""
        if self._bar is not None:
            self._bar.update(steps)

    def log_train(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """A train record: `metrics` holds loss (+ components), lr/<group>, grad_norm, ..."""
        if not self.enabled:
            return
        lrs = [v for k, v in metrics.items() if k.startswith("lr/")]
        record = {"split": "train", "step": step, "epoch": epoch, **metrics}
        record["lr"] = lrs[0] if lrs else float("nan")
        self._write(record, prefix="train")
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{record['lr']:.2e}")
        log.info(_format_train(step, self.total_steps, epoch, metrics))

    def log_val(self, step: int, epoch: int, metrics: dict[str, Any]) -> None:
        """A validation record: the scalar results of `evaluate_policy`, prefixed `val_`."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"split": "val", "step": step, "epoch": epoch}
        for key, value in metrics.items():
            if key != "per_task":
                record[f"val_{key}"] = value
        self._write(record, prefix="val")
        log.info(
            "validation step %d | val loss %.4f | L1 (action units) %.4f | gripper acc %.3f",
            step,
            metrics["loss"],
            metrics["l1_mean"],
            metrics["gripper_accuracy"],
        )

    def log_rollout(self, step: int, epoch: int, suite: dict[str, Any] | None) -> None:
        """An in-training rollout record: `rollout_success_rate`, trials and episode length."""
        if not self.enabled or not suite:
            return
        record: dict[str, Any] = {"split": "rollout", "step": step, "epoch": epoch}
        for key in ("success_rate", "successes", "trials", "mean_steps"):
            record[f"rollout_{key}"] = suite[key]
        self._write(record, prefix="rollout")

    def log_scalar(self, key: str, value: float, step: int) -> None:
        """One extra scalar (e.g. the mean-action baseline) to TensorBoard and W&B."""
        if self._tb is not None:
            self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({key: value}, step=step)

    # -- end of run -----------------------------------------------------------------------

    def finish(self, summary: dict[str, Any]) -> None:
        """summary.json, plots, report.md; close TensorBoard, W&B and the progress bar."""
        if not self.enabled:
            return
        self.close()
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        plots = make_plots(self.metrics_path, self.run_dir / "plots")
        write_report(self.run_dir, summary, plots)

    def close(self) -> None:
        """Release the sinks (also on errors); idempotent."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    # -- internals ------------------------------------------------------------------------

    def _write(self, record: dict[str, Any], prefix: str) -> None:
        record["time"] = time.time()
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        scalars = dict(_flatten(record))
        step = record["step"]
        for key in ("step", "epoch", "time", "split"):
            scalars.pop(key, None)
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"{prefix}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{prefix}/{k}": v for k, v in scalars.items()}, step=step)


class StepMeter:
    """The numbers of the optimizer steps since the last log, for one rank.

    Losses and gradient norms stay device tensors until `summarize` (one host sync per log, not
    per step). Time spent in validation and checkpointing is excluded (`paused`) so samples/s and
    the data-wait fraction describe training alone.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.micro = self.steps = self.samples = 0
        self.grad_norm = torch.zeros((), device=self.device)
        self.lrs: dict[str, float] = {}
        self.data_wait = self.paused_s = 0.0
        self.t0 = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def timed_next(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch, counting the time spent waiting for it."""
        t = time.perf_counter()
        batch = next(batches)
        self.data_wait += time.perf_counter() - t
        return batch

    def add_micro(self, metrics: dict[str, Tensor]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float()
        self.micro += 1

    def add_step(self, grad_norm: Tensor, lrs: dict[str, float], samples: int) -> None:
        self.grad_norm += grad_norm.detach().float()
        self.lrs, self.steps, self.samples = lrs, self.steps + 1, self.samples + samples

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Exclude the body's wall time from the throughput (validation, checkpoints)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - t

    def summarize(self) -> dict[str, float]:
        """Window means (this rank) and rates; resets the window."""
        elapsed = max(time.perf_counter() - self.t0 - self.paused_s, 1e-9)
        out = {k: float(v) / max(self.micro, 1) for k, v in self.sums.items()}
        out.update(self.lrs)
        out["grad_norm"] = float(self.grad_norm) / max(self.steps, 1)
        out["samples_per_s"] = self.samples / elapsed
        out["steps_per_s"] = self.steps / elapsed
        out["data_wait_frac"] = min(self.data_wait / elapsed, 1.0)
        if self.device.type == "cuda":  # absent on the CPU (strict JSON has no NaN)
            out["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.reset()
        return out


def _truncate_metrics(path: Path, keep_until: int) -> None:
    """Drop records with step > keep_until (a fresh run, keep_until=0, starts an empty file)."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= keep_until]
    text = "".join(json.dumps(r) + "\n" for r in kept) if keep_until > 0 else ""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of a (nested) record as ("a/b", value) pairs."""
    out: list[tuple[str, float]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, prefix=f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((name, float(value)))
    return out


def _format_train(step: int, total: int, epoch: int, m: dict[str, float]) -> str:
    parts = [f"step {step}/{total}", f"epoch {epoch}", f"loss {m['loss']:.4f}"]
    comps = [f"{k[5:]} {v:.4f}" for k, v in m.items() if k.startswith("loss_")]
    if comps:
        parts[-1] += f" ({', '.join(comps)})"
    lrs = [f"{v:.2e}" for k, v in m.items() if k.startswith("lr/")]
    parts.append(f"lr {'/'.join(lrs)}")
    parts.append(f"grad norm {m['grad_norm']:.3f}")
    parts.append(f"{m['samples_per_s']:.1f} samples/s")
    parts.append(f"data wait {100 * m['data_wait_frac']:.0f}%")
    if "peak_mem_gib" in m:
        parts.append(f"peak mem {m['peak_mem_gib']:.2f} GiB")
    return " | ".join(parts)


def _init_wandb(cfg: AtlasConfig, run_dir: Path) -> Any:
    """Start (or continue, by the id stored in the run directory) the W&B run."""
    import wandb  # optional extra; check_wandb() has already verified it is installed

    w = cfg.logging.wandb
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id + "\n")
    return wandb.init(
        project=w.project,
        entity=w.entity,
        name=w.name,
        mode=w.mode,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=to_dict(cfg),
    )
