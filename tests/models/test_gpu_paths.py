"""The fast paths a GPU run depends on (run by `pytest -m gpu` and the device check).

Each test pins one cause of a slow GPU number: attention that falls back to the math kernel, an
unfused optimizer, a host synchronisation inside the train step, unpinned loader memory, and
CUDA-graph replay that computes something else than the eager policy. Skipped without CUDA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from atlas.config import AtlasConfig, load_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DEBUG_YAML = Path(__file__).resolve().parents[2] / "atlas" / "configs" / "debug.yaml"


def gpu_cfg(tmp_path: Path, language: Path, *overrides: str) -> AtlasConfig:
    """debug.yaml on a tiny synthetic set, the tiny LLaMA as encoder, bf16, pinned batches."""
    return load_config(
        DEBUG_YAML,
        [
            f"data.paths=[{tmp_path / 'data'}]",
            "data.synthetic={tasks: 2, demos: 4, steps: 16, image_size: 32}",
            "data.image_size=56",
            "data.batch_size=4",
            "data.pin_memory=true",
            f"model.language_encoder.name_or_path={language}",
            "model.fusion.dropout=0.1",
            "model.action_head.chunk_size=4",
            "training.mixed_precision=bf16",
            "logging.progress=false",
            "logging.tensorboard=false",
            f"checkpoint.save_dir={tmp_path / 'run'}",
            *overrides,
        ],
    )


def test_vggt_attention_runs_the_flash_kernel_in_bf16() -> None:
    """qk-norm + RoPE under bf16 autocast must reach SDPA as bf16 with no mask: flash applies."""
    from atlas.models.vggt.aggregator import patch_positions
    from atlas.models.vggt.layers import Attention, rope_2d_tables

    attn = Attention(1024, 16, qk_norm=True).cuda()
    x = torch.randn(2, 5 + 16 * 16, 1024, device="cuda")
    rope = rope_2d_tables(patch_positions(16, 16, 5, x.device), 64, 100.0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if flash cannot run
            fast = attn(x, rope)
        with sdpa_kernel(SDPBackend.MATH):
            ref = attn(x, rope)
    assert fast.dtype == torch.bfloat16
    err = (fast.float() - ref.float()).norm() / ref.float().norm()
    assert err < 2e-2, err


def test_fusion_attention_with_padding_mask_runs_memory_efficient_kernel() -> None:
    """The cross-attention's padding mask rules flash out; the memory-efficient kernel must
    take it (with dropout, as in training) instead of the math fallback."""
    from atlas.models.fusion import MultiHeadAttention

    attn = MultiHeadAttention(512, 8, dropout=0.1).cuda().train()
    q, ctx = torch.randn(8, 8, 512, device="cuda"), torch.randn(8, 37, 512, device="cuda")
    mask = torch.ones(8, 37, dtype=torch.bool, device="cuda")
    mask[:, 30:] = False
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        out = attn(q, ctx, mask)
    out.float().sum().backward()
    assert torch.isfinite(attn.q.weight.grad).all()


def test_optimizer_is_fused_adamw_on_cuda(tmp_path: Path, tiny_llama: Path) -> None:
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy
    from atlas.training.optim import build_optimizer

    cfg = gpu_cfg(tmp_path, tiny_llama)
    policy = build_policy(policy_config(cfg)).cuda()
    opt = build_optimizer(policy, cfg, 1, torch.device("cuda"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True


def test_train_step_never_synchronises_with_the_host(tmp_path: Path, tiny_llama: Path) -> None:
    """A whole optimizer step (pinned batch -> forward -> backward -> clip -> fused AdamW ->
    schedule) under CUDA's sync debug mode: any .item(), blocking copy or pageable-to-device
    copy made by torch raises."""
    import itertools

    from atlas.distributed.env import DistInfo
    from atlas.training.trainer import Trainer

    trainer = Trainer(gpu_cfg(tmp_path, tiny_llama), DistInfo(device=torch.device("cuda", 0)))
    try:
        batch = next(iter(trainer.data.train_loader))
        assert batch["images"].is_pinned() and batch["actions"].is_pinned()
        held = itertools.repeat(batch)
        trainer.wrapped.train()
        for _ in range(2):  # lazy CUDA/cuBLAS initialisation happens here, outside the check
            trainer.train_step(held, 1)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step(held, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        assert torch.isfinite(trainer.meter.sums["loss"])
    finally:
        trainer.close()


def test_cuda_graph_replay_matches_the_eager_policy(tmp_path: Path, tiny_llama: Path) -> None:
    from atlas.models.config import policy_config
    from atlas.models.cuda_graph import GraphedPredictChunk
    from atlas.models.policy import build_policy
    from atlas.models.testing import make_fake_batch

    cfg = gpu_cfg(tmp_path, tiny_llama)
    policy = build_policy(policy_config(cfg)).cuda().eval()

    def obs(seed: int, instruction: int = 0) -> dict:
        b = make_fake_batch(policy.config, 1, seed=seed)
        return {
            "images": b["images"],
            "proprio": b["proprio"],
            "instruction": [b["instruction"][0] + " now" * instruction],
        }

    graphed = GraphedPredictChunk(policy, obs(0))
    for seed in (1, 2):
        with torch.no_grad():
            expected = policy.predict_chunk(obs(seed))
        torch.testing.assert_close(graphed(obs(seed)), expected, rtol=1e-4, atol=1e-5)
    assert graphed.replays == 2
    graphed(obs(3, instruction=1))  # another instruction: the eager path, no replay
    assert graphed.replays == 2
