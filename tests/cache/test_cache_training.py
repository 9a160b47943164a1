"""Training from the feature cache: same losses as online, cache keys, resume, CLI, no backbones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import default_collate

from atlas.cache.build import build_feature_cache, key_for, open_cached_datasets
from atlas.cache.dataset import select_variant
from atlas.cache.keys import diff_inputs, digest
from atlas.cache.store import CacheMissError
from atlas.config import AtlasConfig, ConfigError, load_config
from atlas.distributed.env import DistInfo

CPU = torch.device("cpu")
SYNTH = "{tasks: 2, demos: 3, steps: 10, image_size: 32}"


def make_cfg(root: Path, *overrides: str, cached: bool = False) -> AtlasConfig:
    """The debug config shrunk further: 2 tasks x 3 demos x 10 steps, 28 px, store in fp32."""
    from atlas.config.arguments import packaged_config

    base = [
        f"data.paths=[{root / 'synth'}]",
        f"data.synthetic={SYNTH}",
        f"checkpoint.save_dir={root / 'run'}",
        f"data.cache_dir={root / 'cache'}",
        "data.image_size=28",
        "data.batch_size=4",
        "data.val_split=0.34",
        "data.cache_dtype=float32",
        "model.geometry.tokens_per_frame=1",
        "model.geometry.keypoints=0",  # the keypoint branch reads pixels, which no cache holds
        "model.action_head.use_keypoints=false",
        "training.mixed_precision=fp32",
        f"data.use_feature_cache={str(cached).lower()}",
    ]
    return load_config(packaged_config("debug.yaml"), [*base, *overrides])


def datasets(cfg: AtlasConfig) -> tuple[Any, Any, Any]:
    from atlas.data import build_datasets

    return build_datasets(cfg)


def online_policy(cfg: AtlasConfig, normalizer: Any) -> Any:
    """The policy exactly as the trainer builds it (seeded first)."""
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy
    from atlas.runtime import seed_everything

    seed_everything(cfg.training.seed)
    return build_policy(policy_config(cfg), normalizer)


def cached_policy(cfg: AtlasConfig, normalizer: Any, online: Any) -> Any:
    """A backbone-free policy holding the online policy's trainable weights."""
    from atlas.models.config import policy_config
    from atlas.models.policy import build_policy

    policy = build_policy(policy_config(cfg), normalizer, backbones=False)
    state = {k: v for k, v in online.state_dict().items() if k in policy.state_dict()}
    policy.load_state_dict(state, strict=True)
    return policy


def paired_losses(cfg_on: AtlasConfig, cfg_c: AtlasConfig, steps: int = 3) -> list[tuple]:
    """(online loss, cached loss) over `steps` AdamW steps on the same samples and weights."""
    build_feature_cache(cfg_c, DistInfo(), shard_size=5, progress=False)
    train, val, normalizer = datasets(cfg_on)
    cached_train, _ = open_cached_datasets(cfg_c, *datasets(cfg_c)[:2], CPU)
    p_on = online_policy(cfg_on, normalizer)
    p_c = cached_policy(cfg_c, normalizer, p_on)
    opts = [
        torch.optim.AdamW([p for p in m.parameters() if m and p.requires_grad], lr=1e-2)
        for m in (p_on, p_c)
    ]
    k = cached_train.num_variants
    out = []
    for step in range(steps):
        epoch, idx = step, [(3 * step + j) % len(train) for j in range(4)]
        # The cached sample of (i, epoch) is variant v of i: the online augmentation of epoch v.
        on = default_collate(train.__getitems__([(i, select_variant(0, epoch, i, k)) for i in idx]))
        ca = default_collate(cached_train.__getitems__([(i, epoch) for i in idx]))
        assert "images" not in ca and "vggt_tokens" in ca and "language_tokens" in ca
        losses = []
        for policy, batch, opt in zip((p_on, p_c), (on, ca), opts):
            policy.train()
            loss, _ = policy(batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        out.append(tuple(losses))
    return out


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            "data.cameras=[agentview_rgb, eye_in_hand_rgb]",
            "data.history=2",
            "model.geometry.keep_special_tokens=true",
            "model.geometry.tokens_per_frame=4",
            "data.image_size=56",
        ],
        ["model.geometry.use_camera_pose=true", "model.geometry.use_point_features=true"],
        [
            "data.augmentation.enabled=true",
            "data.augmentation.num_cached_variants=2",
            "training.seed=0",
        ],
    ],
    ids=["plain", "2cams-history-special", "pose-points", "augmented-K2"],
)
def test_cached_and_online_losses_match(tmp_path: Path, extra: list[str]) -> None:
    cfg_on = make_cfg(tmp_path, *extra)
    cfg_c = make_cfg(tmp_path, *extra, cached=True)
    # The two paths compute the same features in a different float32 order (one batch online, a
    # cache shard built from another), and three AdamW steps at lr 1e-2 carry that rounding into
    # the weights: 1.1e-5 relative was measured with pose and point features on a 2-core VM
    # (2026-12-03), over the 1e-5 this test used to allow.
    for online, cached in paired_losses(cfg_on, cfg_c):
        assert abs(online - cached) <= 1e-4 * max(1.0, abs(online)), (online, cached)


# ----------------------------------------------------------------------------- cache keys


def _key(cfg: AtlasConfig) -> dict[str, Any]:
    train, val, _ = datasets(cfg)
    return key_for(cfg, {"train": train, "val": val}, CPU)


@pytest.fixture(scope="module")
def key_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    _key(make_cfg(root))  # generates the synthetic data once
    return root


@pytest.mark.parametrize(
    "override,changed",
    [
        ("data.val_split=0.5", "dataset.splits"),  # indexing: which samples, in which order
        ("data.filter_noops=true", "dataset.splits"),
        ("data.image_size=56", "preprocessing.image_size"),
        ("data.orientation=rot180", "preprocessing.orientation"),
        ("data.cameras=[eye_in_hand_rgb]", "preprocessing.cameras"),
        ("data.history=2", "preprocessing.history"),
        ("data.augmentation.enabled=true", "preprocessing.augmentation"),
        ("model.vggt.layers=[-2]", "backbone.vggt.layers"),
        ("training.seed=7", "backbone.vggt.weights.random_init_seed"),
        ("model.geometry.tokens_per_frame=4", "backbone.geometry.tokens_per_frame"),
        ("model.geometry.use_camera_pose=true", "backbone.geometry.use_camera_pose"),
        ("model.language_encoder.pooling=last_token", "backbone.language.pooling"),
        ("data.cache_dtype=float16", "precision.store_dtype"),
    ],
)
def test_every_key_input_changes_the_key(key_root: Path, override: str, changed: str) -> None:
    base, other = _key(make_cfg(key_root)), _key(make_cfg(key_root, override))
    assert digest(base) != digest(other)
    assert any(d.startswith(changed) for d in diff_inputs(base, other)), diff_inputs(base, other)


def test_augmentation_settings_change_the_key(key_root: Path) -> None:
    on = ["data.augmentation.enabled=true"]
    a = _key(make_cfg(key_root, *on))
    b = _key(make_cfg(key_root, *on, "data.augmentation.brightness=0.5"))
    c = _key(make_cfg(key_root, *on, "data.augmentation.num_cached_variants=2"))
    assert len({digest(a), digest(b), digest(c)}) == 3
    # With augmentation off its settings change nothing the cache holds.
    assert digest(_key(make_cfg(key_root, "data.augmentation.brightness=0.5"))) == digest(
        _key(make_cfg(key_root))
    )


def test_dataset_file_touched_or_changed_is_a_miss(tmp_path: Path) -> None:
    import h5py

    cfg = make_cfg(tmp_path, cached=True)
    build_feature_cache(cfg, DistInfo(), shard_size=8, progress=False)
    open_cached_datasets(cfg, *datasets(cfg)[:2], CPU)  # hit
    file = sorted((tmp_path / "synth").rglob("*.hdf5"))[0]
    st = file.stat()
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    with pytest.raises(CacheMissError, match=r"dataset\.files\[0\]\.mtime_ns"):
        open_cached_datasets(cfg, *datasets(cfg)[:2], CPU)
    build_feature_cache(cfg, DistInfo(), shard_size=8, progress=False)
    with h5py.File(file, "a") as f:  # changed content
        f["data/demo_0/actions"][0, 0] += 1.0
    with pytest.raises(CacheMissError, match="atlas cache"):
        open_cached_datasets(cfg, *datasets(cfg)[:2], CPU)


def test_vggt_checkpoint_identity_is_in_the_key(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from atlas.models.config import policy_config
    from atlas.models.policy import build_vggt_backbone

    ckpt = tmp_path / "vggt.safetensors"
    cfg = make_cfg(tmp_path, f"model.vggt.checkpoint={ckpt}")
    save_file(build_vggt_backbone(policy_config(make_cfg(tmp_path))).state_dict(), ckpt)
    first = _key(cfg)
    assert first["backbone"]["vggt"]["weights"]["checkpoint"]["size"] == ckpt.stat().st_size
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # new weights, same name
    assert digest(_key(cfg)) != digest(first)


# ----------------------------------------------------------------------------- build & CLI


def test_interrupted_build_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atlas.cache.build as build

    cfg = make_cfg(tmp_path, cached=True)
    calls = {"n": 0}
    real = build._to_numpy

    def flaky(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C in the middle of a shard
        return real(*args)

    monkeypatch.setattr(build, "_to_numpy", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(cfg, DistInfo(), shard_size=4, batch_size=2, progress=False)
    monkeypatch.setattr(build, "_to_numpy", real)
    with pytest.raises(CacheMissError):
        open_cached_datasets(cfg, *datasets(cfg)[:2], CPU)
    result = build_feature_cache(cfg, DistInfo(), shard_size=4, batch_size=2, progress=False)
    train, val, _ = datasets(cfg)
    assert 0 < result.samples == len(train) + len(val) - 4  # the first shard was kept
    assert not list(result.directory.rglob("*.tmp-*"))
    open_cached_datasets(cfg, train, val, CPU)


def test_ranks_build_disjoint_shards(tmp_path: Path) -> None:
    """Two ranks (run one after the other here) split the shards; rank 0 finalizes."""
    cfg = make_cfg(tmp_path, cached=True)
    r1 = build_feature_cache(cfg, DistInfo(rank=1, world_size=2), shard_size=4, progress=False)
    r0 = build_feature_cache(cfg, DistInfo(rank=0, world_size=2), shard_size=4, progress=False)
    train, val, _ = datasets(cfg)
    assert r0.samples + r1.samples == len(train) + len(val)
    assert r0.samples > 0 and r1.samples > 0
    open_cached_datasets(cfg, train, val, CPU)


def test_cli_builds_then_hits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atlas.cli import main

    cfg = make_cfg(tmp_path)
    config = tmp_path / "cfg.yaml"
    from atlas.config.loader import save_config

    save_config(cfg, config)
    assert main(["cache", "--config", str(config), "--check"]) == 1
    assert "miss" in capsys.readouterr().out
    assert main(["cache", "--config", str(config), "--no-progress"]) == 0
    assert "built" in capsys.readouterr().out
    assert main(["cache", "--config", str(config), "--check"]) == 0
    assert main(["cache", "--config", str(config)]) == 0
    assert "hit" in capsys.readouterr().out
    bad = [
        "--set",
        "data.augmentation.enabled=true",
        "--set",
        "data.augmentation.num_cached_variants=0",
    ]
    assert main(["cache", "--config", str(config), *bad]) == 2
    assert "num_cached_variants" in capsys.readouterr().err


def test_config_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="frozen backbone"):
        make_cfg(tmp_path, "model.vggt.freeze=false", cached=True)
    with pytest.raises(ConfigError, match="num_cached_variants"):
        make_cfg(
            tmp_path,
            "data.augmentation.enabled=true",
            "data.augmentation.num_cached_variants=0",
            cached=True,
        )
    make_cfg(tmp_path, "data.augmentation.num_cached_variants=0", cached=True)  # aug off: fine


def test_training_from_cache_never_builds_backbones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import atlas.models.policy as policy_mod
    from atlas.training.trainer import run_training

    cfg = make_cfg(tmp_path, "training.max_steps=3", "training.val_interval=2", cached=True)
    build_feature_cache(cfg, DistInfo(), progress=False)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a backbone was built while training from the cache")

    monkeypatch.setattr(policy_mod, "build_vggt_backbone", forbidden)
    monkeypatch.setattr(policy_mod, "LanguageEncoder", forbidden)
    assert run_training(cfg, progress=False)
    monkeypatch.undo()
    # The export rebuilds the backbones (seeded random init here) that produced the cache: the
    # same policy gives the same loss from images as from the cached features.
    from atlas.models.policy import AtlasVLAPolicy

    exported = AtlasVLAPolicy.from_pretrained(tmp_path / "run" / "final").eval()
    train, val, _ = datasets(cfg)
    cached, _ = open_cached_datasets(cfg, train, val, CPU)
    keys = [(i, 0) for i in range(4)]
    with torch.no_grad():
        online = exported(default_collate(train.__getitems__(keys)))[0]
        from_cache = exported(default_collate(cached.__getitems__(keys)))[0]
    assert abs(online.item() - from_cache.item()) < 1e-5


@pytest.mark.slow
def test_torchrun_two_ranks_build_one_store(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m atlas.cli cache`: gloo on CPU, each rank its shards."""
    import subprocess
    import sys

    from atlas.config.loader import save_config

    cfg = make_cfg(tmp_path, cached=True)
    save_config(cfg, tmp_path / "cfg.yaml")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cli = ["-m", "atlas.cli", "cache", "--config", str(tmp_path / "cfg.yaml"), "--shard-size=4"]
    cmd = [*torchrun, *cli, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    train, val, _ = datasets(cfg)
    cached, _ = open_cached_datasets(cfg, train, val, CPU)
    assert len(cached.split.shards) == -(-len(train) // 4)
