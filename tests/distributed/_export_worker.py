"""torchrun worker: the real tiny policy (VGGT + MiniLM unfrozen, so FSDP2 shards every block)
wrapped by each strategy, exported through the checkpoint manager's `export` (the path the
trainer takes for best/ and final/).

    torchrun --nproc_per_node 2 _export_worker.py OUT_DIR ddp fsdp2 [deepspeed]

Every strategy starts from the same weights (same seed); `OUT_DIR/<strategy>/export/` is the
consolidated save_pretrained export.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from atlas.checkpoint.manager import CheckpointManager
from atlas.checkpoint.state import TrainProgress
from atlas.distributed.env import init_distributed, teardown_distributed
from atlas.distributed.strategy import build_strategy
from atlas.models.config import policy_config
from atlas.models.policy import build_policy
from atlas.models.testing import tiny_config


def export(out: Path, name: str) -> None:
    dist = init_distributed(device="cpu")
    cfg = tiny_config(vggt={"freeze": False}, language_encoder={"freeze": False})
    cfg.training.strategy = name  # type: ignore[assignment]
    cfg.checkpoint.save_dir = str(out / name)
    torch.manual_seed(0)
    policy = build_policy(policy_config(cfg))
    strategy = build_strategy(cfg, dist, "fp32")
    model = strategy.wrap(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    strategy.prepare(model, torch.optim.AdamW(params, lr=1e-4))
    CheckpointManager(cfg, dist, policy, {"progress": TrainProgress()}, strategy).export("export")


def main() -> int:
    out = Path(sys.argv[1])
    try:
        for name in sys.argv[2:]:
            export(out, name)
    finally:
        teardown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
