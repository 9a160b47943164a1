"""The policy contract on CPU with tiny sizes: shapes, loss, freezing, groups, export, predict."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from atlas.config.schema import POLICY_MODULES
from atlas.data.normalization import Normalizer
from atlas.models.policy import AtlasVLAPolicy, build_policy
from atlas.models.testing import TEST_VGGT_PRESET, make_fake_batch, tiny_policy_config
from atlas.models.vggt import build_vggt

FROZEN = ("vggt", "language_encoder")


def _normalizer() -> Normalizer:
    def group(dim: int) -> dict[str, list[float]]:
        return {
            "mean": [0.0] * dim,
            "std": [1.0] * dim,
            "min": [-2.0] * dim,
            "max": [2.0] * dim,
            "q01": [-2.0] * dim,
            "q99": [2.0] * dim,
        }

    return Normalizer({"action": group(7), "proprio": group(8), "num_samples": 10}, "q99")


def _lrs(lr: float) -> dict[str, float]:
    return dict.fromkeys(POLICY_MODULES, lr)


def _policy(**kw) -> AtlasVLAPolicy:
    torch.manual_seed(0)
    return build_policy(tiny_policy_config(**kw), _normalizer())


@pytest.mark.parametrize(
    ("chunk", "proprio", "cameras", "history"),
    [(1, False, 1, 1), (8, True, 2, 1), (8, False, 1, 3), (1, True, 3, 1)],
)
def test_shapes_and_finite_loss(chunk: int, proprio: bool, cameras: int, history: int) -> None:
    data = {"cameras": [f"cam{i}" for i in range(cameras)], "history": history}
    policy = _policy(data=data, action_head={"chunk_size": chunk, "use_proprio": proprio})
    batch = make_fake_batch(policy.config, 3)
    assert batch["images"].shape == (3, cameras * history, 3, 56, 56)
    loss, metrics = policy(batch)
    assert loss.ndim == 0 and loss.isfinite()
    assert set(metrics) == {"loss", "loss_pose", "loss_gripper"}
    assert policy.predict_chunk(batch).shape == (3, chunk, 7)


def test_cached_backbone_features_skip_vggt() -> None:
    policy = _policy(geometry={"use_camera_pose": True, "keep_special_tokens": True}).eval()
    batch = make_fake_batch(policy.config, 2)
    with torch.no_grad():
        feats = policy.backbone_features(batch["images"])
        cached = {k: v for k, v in batch.items() if k != "images"}
        cached.update({f"vggt_{k}": v for k, v in feats.items()})
        assert torch.equal(policy.predict_chunk(batch), policy.predict_chunk(cached))


def test_one_step_updates_only_trainable_parameters() -> None:
    policy = _policy(action_head={"chunk_size": 4, "use_proprio": True}).train()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    opt = torch.optim.AdamW(policy.param_groups(_lrs(1e-3), 0.01), lr=1e-3)
    loss, _ = policy(make_fake_batch(policy.config, 4))
    loss.backward()
    for name in FROZEN:
        module = getattr(policy, name)
        assert not module.training  # policy.train() keeps frozen modules in eval
        assert all(p.grad is None for p in module.parameters())
    opt.step()
    after = policy.state_dict()
    params = dict(policy.named_parameters())
    for key, value in before.items():
        if key.startswith(FROZEN):
            assert torch.equal(value, after[key]), key  # bit-identical
        elif key in params and params[key].requires_grad:
            assert not torch.equal(value, after[key]), f"{key} did not change"


def test_param_groups_follow_module_lr_and_skip_frozen() -> None:
    policy = _policy()
    groups = policy.param_groups({**_lrs(2e-4), "fusion": 1e-3}, weight_decay=0.01)
    assert {g["name"] for g in groups} == {"geometry", "fusion", "action_head"}
    assert {g["lr"] for g in groups if g["name"] == "fusion"} == {1e-3}
    assert {g["lr"] for g in groups if g["name"] != "fusion"} == {2e-4}
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}
    with pytest.raises(ValueError, match="no learning rate for"):
        policy.param_groups({"fusion": 1e-3}, weight_decay=0.01)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(policy.fusion.queries) in no_decay and id(policy.geometry.slot_embed) in no_decay
    assert id(policy.fusion.layers[0].norm_self.weight) in no_decay
    assert id(policy.fusion.lang_proj.weight) not in no_decay
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable
    counts = policy.parameter_counts()
    assert list(counts) == list(POLICY_MODULES)
    assert counts["vggt"]["trainable"] == 0 < counts["vggt"]["total"]


def test_unfrozen_backbones_train_without_unused_parameters(tiny_llama: Path) -> None:
    """The documents' per-module LRs, and every trainable parameter gets a gradient (DDP needs
    that): VGGT parts the geometry never reads are frozen even when VGGT is trained."""
    policy = _policy(
        language=str(tiny_llama),
        vggt={"freeze": False, "layers": [1]},
        language_encoder={"freeze": False, "pooling": "last_token"},
    ).train()
    module_lrs = {**_lrs(1e-4), "language_encoder": 1e-5}
    lrs = {g["name"]: g["lr"] for g in policy.param_groups(module_lrs, 0.01)}
    assert lrs == module_lrs  # every module trains, the language model at its own LR
    assert policy.vggt.training and policy.language_encoder.training
    frozen = [n for n, p in policy.vggt.named_parameters() if not p.requires_grad]
    assert any(n.startswith("aggregator.frame_blocks.2.") for n in frozen)
    assert any(n.startswith("camera_head.") for n in frozen)
    policy(make_fake_batch(policy.config, 2))[0].backward()
    no_grad = [n for n, p in policy.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize("include_frozen", [None, True])
def test_save_load_gives_identical_predictions(tmp_path: Path, include_frozen: bool | None) -> None:
    policy = _policy(action_head={"chunk_size": 4, "use_proprio": True}).eval()
    batch = make_fake_batch(policy.config, 2)
    policy.save_pretrained(tmp_path, include_frozen_backbones=include_frozen)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json",
        "model.safetensors",
        "normalization.json",
    }
    keys = load_file(tmp_path / "model.safetensors").keys()
    # The random-init VGGT is always saved; the frozen MiniLM only when asked for.
    assert any(k.startswith("vggt.") for k in keys)
    assert any(k.startswith("language_encoder.") for k in keys) == bool(include_frozen)
    loaded = AtlasVLAPolicy.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(policy.predict_chunk(batch), loaded.predict_chunk(batch))
    assert loaded.normalizer.to_dict() == policy.normalizer.to_dict()


def test_backbone_reloaded_from_checkpoint_is_fingerprinted(tmp_path: Path) -> None:
    ckpt = tmp_path / "vggt.safetensors"
    save_file(build_vggt(TEST_VGGT_PRESET).state_dict(), ckpt)
    policy = _policy(vggt={"checkpoint": str(ckpt)}).eval()
    policy.save_pretrained(tmp_path / "export")
    assert not any(k.startswith("vggt.") for k in load_file(tmp_path / "export/model.safetensors"))
    batch = make_fake_batch(policy.config, 2)
    loaded = AtlasVLAPolicy.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        assert torch.equal(policy.predict_chunk(batch), loaded.predict_chunk(batch))
    torch.manual_seed(1)  # policy builds no longer advance the generator (seeded VGGT init)
    save_file(build_vggt(TEST_VGGT_PRESET).state_dict(), ckpt)  # other weights, same file
    with pytest.raises(RuntimeError, match="vggt weights reloaded .* differ"):
        AtlasVLAPolicy.from_pretrained(tmp_path / "export")


def test_load_is_strict(tmp_path: Path) -> None:
    from safetensors import safe_open

    _policy().save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(file)
    state.pop("fusion.queries")
    state["fusion.extra"] = torch.zeros(1)
    save_file(state, file, metadata=metadata)
    with pytest.raises(
        RuntimeError, match=r"missing \['fusion.queries'\].*unexpected \['fusion.extra"
    ):
        AtlasVLAPolicy.from_pretrained(tmp_path)


def test_tiny_llama_language_path(tiny_llama: Path) -> None:
    policy = _policy(language=str(tiny_llama))
    policy.config.language_encoder.pooling = "last_token"
    batch = make_fake_batch(policy.config, 4)
    loss, _ = policy(batch)
    assert loss.isfinite()
    assert policy.language_encoder.hidden_size == 32


def test_instruction_cache_is_hit_on_repeated_instructions() -> None:
    policy = _policy()
    batch = make_fake_batch(policy.config, 6)  # 3 distinct instructions, each twice
    policy(batch)
    enc = policy.language_encoder
    assert enc.cache_misses == 3 and enc.cache_hits == 0
    policy(batch)
    assert enc.cache_misses == 3 and enc.cache_hits == 6
    policy.cache_instructions(batch["instruction"], release=True)
    assert enc.released and policy(batch)[0].isfinite()


def test_predict_action_robot_units_and_history() -> None:
    policy = _policy(data={"history": 2}, action_head={"chunk_size": 4, "use_proprio": True})
    rng = np.random.default_rng(0)
    obs = {
        "images": {"agentview_rgb": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)},
        "instruction": "open the top drawer of the cabinet",
        "state": np.zeros(8, dtype=np.float32),
    }
    first = policy.predict_action(obs)
    assert first.shape == (4, 7) and first.dtype == np.float32
    with torch.no_grad():  # robot units: 2 x the normalized chunk for these stats
        frames = torch.cat([policy._history[0]] * 2)[None]  # episode start: frame repeated
        obs_batch = {
            "images": frames,
            "instruction": [obs["instruction"]],
            "proprio": torch.zeros(1, 8),
        }
        np.testing.assert_allclose(first, 2 * policy.predict_chunk(obs_batch)[0].numpy(), 1e-5)
    policy.predict_action(obs)
    assert len(policy._history) == 2
    policy.reset()
    assert len(policy._history) == 0
    assert policy.training  # predict_action restores the mode


def test_no_torch_distributed_under_atlas_models() -> None:
    root = Path(__file__).resolve().parents[2] / "atlas" / "models"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Attribute) and node.attr == "distributed":
                names = [ast.unparse(node)]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("torch.distributed")]
    assert offenders == []
