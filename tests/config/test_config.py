"""The typed config: shipped YAMLs, error messages, overrides, round trip, derived values."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atlas.config import AtlasConfig, ConfigError, dump_yaml, load_config, to_dict
from atlas.config.loader import config_from_resolved

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(glob.glob(str(ROOT / "atlas" / "configs" / "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=[Path(p).name for p in CONFIGS])
def test_every_shipped_config_parses(path: str) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, AtlasConfig)
    assert cfg.validate() == []


def test_shipped_configs_exist() -> None:
    names = {Path(p).name for p in CONFIGS}
    assert {
        "train_config.yaml",
        "debug.yaml",
        "single_gpu.yaml",
        "8gpu.yaml",
        "8gpu_large_batch.yaml",
    } <= names


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_misspelt_section_suggests(tmp_path: Path) -> None:
    p = _write(tmp_path, "trainig:\n  learning_rate: 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "'trainig'" in msg and "did you mean 'training'" in msg


def test_misspelt_key_suggests(tmp_path: Path) -> None:
    p = _write(tmp_path, "training:\n  learning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "training.learning_rat" in str(e.value)
    assert "did you mean 'learning_rate'" in str(e.value)


def test_string_where_number_belongs(tmp_path: Path) -> None:
    p = _write(tmp_path, "training:\n  learning_rate: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "training.learning_rate" in str(e.value) and "expected a number" in str(e.value)


def test_yaml_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads `1e-4` as a string; the documents write it that way.
    assert (
        load_config(_write(tmp_path, "training:\n  learning_rate: 1e-4\n")).training.learning_rate
        == 1e-4
    )


def test_wrong_choice_and_bool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'fsdp2'"):
        load_config(_write(tmp_path, "training:\n  strategy: fsdp\n"))
    with pytest.raises(ConfigError, match="model.vggt.freeze: expected a boolean"):
        load_config(_write(tmp_path, "model:\n  vggt:\n    freeze: 'yes'\n"))


def test_cross_field_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.image_size: must be a multiple of 14"):
        load_config(_write(tmp_path, "data:\n  image_size: 100\n"))
    with pytest.raises(ConfigError, match="needs a frozen backbone"):
        load_config(
            _write(tmp_path, "data: {use_feature_cache: true}\nmodel: {vggt: {freeze: false}}\n")
        )
    with pytest.raises(ConfigError, match="training.module_lr.fuson"):
        load_config(_write(tmp_path, "training:\n  module_lr: {fuson: 1e-4}\n"))


def test_overrides_take_precedence(tmp_path: Path) -> None:
    p = _write(tmp_path, "training:\n  learning_rate: 1e-4\ndata:\n  batch_size: 4\n")
    cfg = load_config(
        p, ["training.learning_rate=2e-4", "data.cameras=[agentview_rgb]", "checkpoint.resume=auto"]
    )
    assert cfg.training.learning_rate == 2e-4
    assert cfg.data.batch_size == 4
    assert cfg.data.cameras == ["agentview_rgb"]
    assert cfg.checkpoint.resume == "auto"
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(p, ["data.batchsize=3"])


def test_resolved_config_round_trips() -> None:
    cfg = load_config(ROOT / "atlas/configs/train_config.yaml", ["training.max_steps=7"])
    again = config_from_resolved(yaml.safe_load(dump_yaml(cfg)), "roundtrip")
    assert to_dict(again) == to_dict(cfg)
    assert again == cfg


def test_derived_values() -> None:
    cfg = load_config(ROOT / "atlas/configs/8gpu.yaml")
    assert cfg.effective_batch_size(8) == 8 * 8 * 2
    assert cfg.lr_scale(8) == 8.0
    cfg.training.lr_scaling = "sqrt"
    assert cfg.lr_scale(4) == 2.0
    cfg.training.lr_scaling = "none"
    assert cfg.lr_scale(8) == 1.0
    cfg.training.epochs, cfg.training.max_steps = 3, None
    assert cfg.total_steps(micro_batches_per_epoch=9) == 3 * 5  # ceil(9 / 2) per epoch
    cfg.training.max_steps = 11
    assert cfg.total_steps(micro_batches_per_epoch=9) == 11


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_train_script_help_from_repo_root() -> None:
    r = _run([sys.executable, "atlas/train.py", "--help"])
    assert r.returncode == 0, r.stderr
    assert "--config" in r.stdout and "--resume" in r.stdout


def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    p = _write(tmp_path, f"trainig: {{}}\ncheckpoint:\n  save_dir: {tmp_path / 'run'}\n")
    r = _run([sys.executable, "atlas/train.py", "--config", str(p)])
    assert r.returncode == 2
    assert "did you mean 'training'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_no_module_shadows_the_standard_library() -> None:
    names = {p.stem for p in (ROOT / "atlas").iterdir() if p.suffix == ".py" or p.is_dir()}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)
