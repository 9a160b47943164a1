"""Checkpointable training state: where the run is (`TrainProgress`) and its RNGs (`RNGState`).

Both follow the `Stateful` protocol the checkpoint manager works with: `state_dict()` returns plain
data (ints, floats, strings, tuples, tensors) that `torch.load(weights_only=True)` can read back,
and `load_state_dict()` restores it in place.

Counters (all per run, the same on every rank):

    step            optimizer steps done; the LR schedule is a pure function of it
    epoch           current epoch (0-based)
    batch_in_epoch  micro-batches of `epoch` already consumed on each rank (the data position)
    samples_seen    training samples consumed by all ranks (the batch-change invariant)
    best_val_loss   lowest validation loss so far (inf before the first validation)
    best_step       `step` at which `best_val_loss` was measured (-1 before)
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

log = logging.getLogger(__name__)


@runtime_checkable
class Stateful(Protocol):
    """Anything the checkpoint manager can save: optimizer, scheduler, scaler, sampler, ..."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


@dataclass
class TrainProgress:
    """Training counters; see the module docstring for what each one means."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples_seen: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in state_dict.items():
            if key in names:
                setattr(self, key, value)
            else:  # a newer or older format: keep what we know, say what we dropped
                log.warning("TrainProgress: ignoring unknown field %r in checkpoint", key)


class RNGState:
    """The random-number generators of THIS process: Python, NumPy, torch CPU and CUDA.

    Each rank has its own generators (dropout masks differ per rank when seeded per rank), so the
    manager gathers every rank's state into one file at save time and hands each rank its own
    entry back at load time (`per_rank_state`). NumPy's key is stored as an int64 tensor so the
    file stays loadable with `weights_only=True`.
    """

    per_rank_state = True

    def state_dict(self) -> dict[str, Any]:
        _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": {
                "key": torch.from_numpy(key.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "torch": torch.get_rng_state(),
            "cuda": None,
        }
        # Only this process's device: under torchrun each rank drives exactly one GPU.
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(_as_python_state(state_dict["python"]))
        n = state_dict["numpy"]
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda")
        if cuda is not None:
            if torch.cuda.is_available():
                torch.cuda.set_rng_state(cuda)
            else:
                log.warning("Checkpoint has a CUDA RNG state but CUDA is unavailable: ignored")


def _as_python_state(state: Any) -> tuple[Any, ...]:
    """`random.setstate` wants (version, tuple of 625 ints, gauss); serializers may give lists."""
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)
