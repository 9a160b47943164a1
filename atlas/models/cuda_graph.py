"""CUDA-graph replay of `predict_chunk` for batch-1 inference (closed-loop control).

At batch 1 the policy's forward is launch-bound: VGGT-1B alone is hundreds of small kernels, each
costing a few microseconds of CPU-side launch work, more than many of them take on the GPU. A CUDA
graph records those launches once and replays them with one call. Replay needs static shapes and
addresses, so the graph is captured for one input signature (image shape, proprio shape and the
instruction texts, whose language features come from the frozen encoder's cache); a call with
another signature runs the eager path.

    policy.predict_chunk = GraphedPredictChunk(policy, example_batch)   # applied from outside
    policy.predict_action(observation)                                  # now replays the graph

Capture under the autocast the calls will use (the recorded kernels keep their dtypes); the
policy is put in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

TENSOR_KEYS = ("images", "proprio")


def uncached_autocast() -> torch.autocast:
    """The caller's CUDA autocast with its weight-cast cache off.

    A cast cached before capture would be read by the graph but not recorded in it, and freed
    when the caller's autocast exits: every replay would then read released memory.
    """
    return torch.autocast(
        "cuda",
        dtype=torch.get_autocast_dtype("cuda"),
        enabled=torch.is_autocast_enabled("cuda"),
        cache_enabled=False,
    )


class GraphedPredictChunk:
    """Callable with `predict_chunk`'s contract, replaying a CUDA graph for one signature."""

    def __init__(self, policy: nn.Module, batch: dict[str, Any], warmup: int = 3) -> None:
        device = next(policy.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need the policy on a GPU, not {device}")
        policy.eval()  # recorded kernels are fixed: dropout must already be off
        # The class's function, bound to the policy: unaffected by an instance-level override.
        self.eager: Callable[[dict[str, Any]], Tensor] = type(policy).predict_chunk.__get__(policy)
        self.instruction = list(batch["instruction"])
        self.static: dict[str, Any] = {"instruction": self.instruction}
        for key in TENSOR_KEYS:
            if key in batch:
                self.static[key] = batch[key].to(device).clone()
        # Warm-up on a side stream (as torch.cuda.graphs advises): lazy initialisation, cuBLAS
        # handles and the instruction cache all happen before capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), uncached_autocast(), torch.cuda.stream(side):
            for _ in range(warmup):
                self.eager(self.static)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), uncached_autocast(), torch.cuda.graph(self.graph):
            self.output = self.eager(self.static)
        self.replays = 0

    def matches(self, batch: dict[str, Any]) -> bool:
        """Whether `batch` has the captured signature (same keys, shapes and instructions)."""
        if list(batch["instruction"]) != self.instruction:
            return False
        keys = {k for k in TENSOR_KEYS if k in batch}
        if keys != {k for k in TENSOR_KEYS if k in self.static}:
            return False
        return all(batch[k].shape == self.static[k].shape for k in keys)

    def __call__(self, batch: dict[str, Any]) -> Tensor:
        if not self.matches(batch):
            return self.eager(batch)
        for key in TENSOR_KEYS:
            if key in self.static:
                self.static[key].copy_(batch[key], non_blocking=True)
        self.graph.replay()
        self.replays += 1
        return self.output.clone()  # the graph's buffer is overwritten by the next replay
