"""`training.compile` compiles each transformer block in place and computes the same loss."""

from __future__ import annotations

import pytest
import torch

from atlas.distributed.compile import compile_blocks
from atlas.models.fusion import FusionLayer
from atlas.models.policy import build_policy
from atlas.models.testing import make_fake_batch, tiny_policy_config
from atlas.models.vggt.layers import Block


def _loss_and_grads(policy: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, list]:
    loss, _ = policy(batch)
    loss.backward()
    grads = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
    policy.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _policy() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_policy(tiny_policy_config(fusion={"dim": 32, "depth": 2})).train()


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_blocks_give_the_eager_loss_and_gradients(backend: str) -> None:
    torch._dynamo.reset()
    eager, compiled = _policy(), _policy()
    keys = list(compiled.state_dict())
    n = compile_blocks(compiled, backend=backend)
    blocks = [
        m
        for name, m in compiled.named_modules()
        if isinstance(m, Block | FusionLayer) and not name.startswith("language_encoder.")
    ]
    assert n == len(blocks) > 2
    assert list(compiled.state_dict()) == keys  # in place: checkpoints do not change
    batch = make_fake_batch(compiled.config, 2)
    ref_loss, ref_grads = _loss_and_grads(eager, batch)
    loss, grads = _loss_and_grads(compiled, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(ref_grads)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
