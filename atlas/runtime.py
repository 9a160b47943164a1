"""What every command sets up before it runs a model: the precision policy, seeds, the device.

Training, evaluation and the feature cache all use these, so they live below all three (this
module imports nothing of atlas) and none of those packages needs another for its set-up.

The mixed-precision policy, stated once (`training.mixed_precision`):
  auto  bf16 autocast on GPUs that support it (Ampere and newer), fp16 autocast + GradScaler on
        older GPUs, plain fp32 on the CPU (CPU autocast is slower than fp32 for these models).
  bf16  autocast to bfloat16 (CUDA or CPU); no scaler: bf16 has fp32's exponent range.
  fp16  autocast to float16 with a dynamic GradScaler against gradient underflow.
  fp32  no autocast.

Parameters, optimizer state and gradients stay fp32 in every mode; autocast only picks the dtype
of matmuls and convolutions. Numerically sensitive parts (VGGT's heads, the loss) turn autocast off
inside the model, which is single-device code and knows where that matters.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

log = logging.getLogger(__name__)

Precision = Literal["bf16", "fp16", "fp32"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_PRECISIONS: dict[str, Precision] = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


@dataclass(frozen=True)
class PrecisionPolicy:
    """The resolved precision of one run on one device."""

    name: Precision
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling (the strategy builds the GradScaler)."""
        return self.name == "fp16"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward-pass context: autocast to `dtype`, or nothing for fp32."""
        if self.name == "fp32":
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield


def resolve_precision(mode: str, device: torch.device) -> PrecisionPolicy:
    """Turn `training.mixed_precision` into a `PrecisionPolicy` for `device`."""
    if mode == "auto":
        if device.type == "cuda":
            name: Precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    elif mode in _PRECISIONS:
        name = _PRECISIONS[mode]
    else:
        raise ValueError(f"training.mixed_precision: unknown mode {mode!r} (auto|bf16|fp16|fp32)")
    if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            "training.mixed_precision=bf16 but this GPU has no bf16 support; use fp16 or auto"
        )
    if device.type == "cpu" and name == "fp16":
        log.warning("fp16 autocast on the CPU is slow and rarely useful; consider fp32 or bf16")
    return PrecisionPolicy(name=name, device=device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str | None = None) -> torch.device:
    """`cpu | cuda | cuda:N` as given, else cuda when a GPU is visible, else cpu."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
