"""The only package that touches `torch.distributed`: process groups, topology and model wrapping.

`DistInfo` is the topology object every component receives; rank-0 gating lives in helpers here,
never sprinkled at call sites. Collectives are always called on every rank.
"""

from atlas.distributed.env import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    init_distributed,
    teardown_distributed,
)

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "init_distributed",
    "teardown_distributed",
]
