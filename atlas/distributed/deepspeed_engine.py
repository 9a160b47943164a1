"""DeepSpeed ZeRO stage 2 (`deepspeed` package, optional extra) behind the `Strategy` hooks.

(Named `deepspeed_engine`, not `deepspeed`: a module named like the package would shadow it.)

ZeRO-2 shards the optimizer state and the gradients over the data-parallel ranks; parameters stay
replicated, so a forward pass needs no communication and `policy.state_dict()` on rank 0 is the
full model (the export needs no gathering). The engine owns backward (gradient reduction into
partitions), clipping (`gradient_clipping`), the optimizer step and zeroing the gradients; the
trainer's AdamW and LR schedule are handed to it and keep working as before.

Precision: the parameters stay fp32 and autocast picks the compute dtype, as under DDP/FSDP2
(for bf16 through DeepSpeed's `torch_autocast` section, see `deepspeed_config`). DeepSpeed's own
bf16/fp16 modes cast the WHOLE module to half precision, which breaks
the parts of the policy that run in fp32 on purpose (VGGT's heads) and the frozen-backbone
dtypes; fp16 is therefore refused (fp16 autocast would need a loss scaler DeepSpeed does not
share with torch.amp). Because the bf16 mode is off, the optimizer shards are named
`zero_pp_rank_X_mp_rank_00_optim_states.pt`, without the `bf16_` prefix of the design document.

A checkpoint is DeepSpeed's native layout, inside the checkpoint manager's iter_N directory:

    iter_00001000/
      mp_rank_00_model_states.pt                      module weights (trainable + buffers;
                                                      frozen too with checkpoint.save_frozen)
      zero_pp_rank_0_mp_rank_00_optim_states.pt       rank 0's optimizer + fp32 weight shard
      zero_pp_rank_1_mp_rank_00_optim_states.pt       rank 1's ...
      scheduler.pt progress.pt ... meta.json COMPLETE.json   (the manager's files, as for ddp)

Resuming needs the same number of ranks (ZeRO-2 shards are per rank); to change it, convert with
DeepSpeed's `ds_to_universal.py`, or restart from the weights (`checkpoint.load_from`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from atlas.config.schema import AtlasConfig
from atlas.distributed.env import DistInfo
from atlas.distributed.strategy import Strategy, register_strategy
from atlas.safeload import load_pt

log = logging.getLogger(__name__)

MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's name for the (replicated) weights
OPTIM_GLOB = "*zero_pp_rank_*_optim_states.pt"  # one per rank

_INSTALL_HINT = (
    "training.strategy=deepspeed needs the `deepspeed` package: pip install 'atlas-vla[deepspeed]' "
    "(or pip install deepspeed; if its build complains that torch is missing, add "
    "--no-build-isolation). Or use training.strategy=fsdp2, which needs nothing extra."
)


def import_deepspeed(device: torch.device) -> Any:
    """Import deepspeed, telling it to use the CPU accelerator when this run is on the CPU."""
    if device.type == "cpu":
        # Without it DeepSpeed probes for GPUs and warns; CPU runs (tests, CI) use gloo.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its INFO dumps the whole config
    return deepspeed


def deepspeed_config(
    cfg: AtlasConfig, world_size: int, device: torch.device, precision: str = "fp32"
) -> dict[str, Any]:
    """DeepSpeed's config dict for ZeRO stage 2, from the AtlasVLA config (one source of truth).

    `precision` is the run's resolved precision. For bf16 the engine is told to use torch's
    autocast (`torch_autocast`): without that section it DISABLES an autocast opened outside it
    and would silently compute in fp32. No module is declared "lower-precision safe", so
    gradients are still reduced in fp32, as under DDP and FSDP2.
    """
    t = cfg.training
    bucket = int(5e8)  # elements per reduce / all-gather bucket (DeepSpeed's default)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": cfg.effective_batch_size(world_size),
        "gradient_clipping": t.max_grad_norm or 0.0,  # 0 = no clipping
        "zero_optimization": {
            "stage": 2,
            "contiguous_gradients": True,
            "overlap_comm": device.type == "cuda",  # needs CUDA streams
            "reduce_bucket_size": bucket,
            "allgather_bucket_size": bucket,
        },
        # The trainer's torch.optim.AdamW is handed over as is.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # the trainer logs; DeepSpeed stays quiet
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        config["torch_autocast"] = {
            "enabled": True,
            "dtype": "bfloat16",
            "lower_precision_safe_modules": [],
        }
    return config


def _ensure_process_group(dist: DistInfo) -> None:
    """DeepSpeed needs a process group even for one process: make a world of one in memory."""
    # The engine reads LOCAL_RANK itself; torchrun sets it, `python atlas/train.py` does not.
    os.environ.setdefault("LOCAL_RANK", str(dist.local_rank))
    if torch_dist.is_initialized():
        return
    backend = "nccl" if dist.device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend, store=torch_dist.HashStore(), rank=0, world_size=1)


@register_strategy("deepspeed")
class DeepSpeedStrategy(Strategy):
    """ZeRO-2 through `deepspeed.initialize`; see the module docstring."""

    owns_model_state = True
    # In the ZeRO optimizer shards: DeepSpeed's loss scaler, ZeRO stage and fragment addresses.
    pickle_globals = (
        "deepspeed.runtime.fp16.loss_scaler.LossScaler",
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.utils.tensor_fragment.fragment_address",
    )
    weights_file = MODEL_STATES

    @classmethod
    def load_weights(cls, directory: Path, model: nn.Module) -> list[str]:
        return load_model_weights(directory, model)

    def __init__(self, cfg: AtlasConfig, dist: DistInfo, precision: str = "fp32") -> None:
        super().__init__(cfg, dist, precision)
        if precision == "fp16":
            raise ValueError(
                "training.strategy=deepspeed with fp16: DeepSpeed's fp16 mode casts the whole "
                "policy to fp16 and fp16 autocast needs a loss scaler it does not share; use "
                "training.mixed_precision=bf16 (or fp32), or training.strategy=fsdp2 / ddp"
            )
        self.deepspeed = import_deepspeed(dist.device)
        self.engine: Any = None

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        super().prepare(model, optimizer)
        _ensure_process_group(self.dist)
        world = torch_dist.get_world_size()
        config = deepspeed_config(self.cfg, world, self.dist.device, self.precision)
        engine, *_ = self.deepspeed.initialize(
            model=model, optimizer=optimizer, config=config, dist_init_required=False
        )
        self.engine = engine
        log.info(
            "DeepSpeed %s ZeRO stage 2 over %d ranks (micro-batch %d, accumulation %d)",
            self.deepspeed.__version__,
            torch_dist.get_world_size(),
            config["train_micro_batch_size_per_gpu"],
            config["gradient_accumulation_steps"],
        )
        return engine

    def build_scaler(self, enabled: bool) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.dist.device.type, enabled=False)  # fp16 is refused

    def zero_grad(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Nothing: the engine zeroes the gradient partitions after each optimizer step."""

    def micro_batch(self, model: nn.Module, last: bool) -> AbstractContextManager[None]:
        # Said explicitly rather than counted by the engine: the last window of an epoch may be
        # shorter than gradient_accumulation_steps.
        self.engine.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def backward(self, model: nn.Module, loss: Tensor, scaler: torch.amp.GradScaler) -> None:
        # The trainer already divided the loss by the window length.
        self.engine.backward(loss, scale_wrt_gas=False)

    def optimizer_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        params: Any,
        max_norm: float | None,
    ) -> Tensor:
        """engine.step(): clip (config gradient_clipping), step, zero the gradients."""
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return torch.as_tensor(float(norm) if norm is not None else float("nan"))

    def save_state(self, directory: Path, model: nn.Module) -> None:
        """DeepSpeed's native files into `directory` (every rank writes its optimizer shard)."""
        self.engine.save_checkpoint(
            str(directory.parent),
            tag=directory.name,
            client_state={},
            save_latest=False,  # the manager's last_checkpoint is the one pointer
            exclude_frozen_parameters=not self.cfg.checkpoint.save_frozen,
        )

    def load_state(self, directory: Path, model: nn.Module) -> None:
        if not (directory / MODEL_STATES).is_file():
            raise FileNotFoundError(
                f"{directory}: no {MODEL_STATES}; not a DeepSpeed checkpoint (was it written "
                "with another training.strategy? use checkpoint.load_from for the weights)"
            )
        shards = sorted(directory.glob(OPTIM_GLOB))
        world = torch_dist.get_world_size()
        if len(shards) != world:
            raise ValueError(
                f"{directory} has {len(shards)} ZeRO-2 optimizer shards but this job has "
                f"{world} ranks: resume with the same number of GPUs, convert "
                "it with DeepSpeed's ds_to_universal.py, or restart from the weights "
                "(checkpoint.load_from)"
            )
        path, _ = self.engine.load_checkpoint(
            str(directory.parent),
            tag=directory.name,
            load_module_strict=False,  # frozen weights are absent unless checkpoint.save_frozen
            load_optimizer_states=True,
            load_lr_scheduler_states=False,  # the manager restores the trainer's scheduler
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {directory}")


def load_model_weights(directory: Path, model: nn.Module) -> list[str]:
    """Weights only (checkpoint.load_from) from a DeepSpeed checkpoint, without deepspeed.

    Returns the model keys the file did not have (frozen ones, normally).
    """
    state = load_pt(directory / MODEL_STATES)  # weights_only: the module states need no globals
    weights = state["module"]
    model.load_state_dict(weights, strict=False)
    return sorted(set(model.state_dict()) - set(weights))
