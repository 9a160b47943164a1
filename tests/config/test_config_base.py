"""`base:` composes YAML files: the base first, then the file's keys on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_merges_mappings_and_replaces_values(tmp_path: Path) -> None:
    shared = (
        "model: {fusion: {dim: 64, depth: 2}}\ndata: {cameras: [agentview_rgb, eye_in_hand_rgb]}"
    )
    run = "base: shared/model.yaml\nmodel: {fusion: {depth: 3}}\ndata: {cameras: [agentview_rgb]}"
    write(tmp_path / "shared/model.yaml", shared)
    top = write(tmp_path / "run.yaml", run)
    cfg = load_config(top, ["model.fusion.num_heads=4"])
    assert (cfg.model.fusion.dim, cfg.model.fusion.depth, cfg.model.fusion.num_heads) == (64, 3, 4)
    assert cfg.data.cameras == ["agentview_rgb"]  # a list replaces the base's list


def test_a_chain_of_bases(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "training: {learning_rate: 3e-4, warmup_steps: 5}\n")
    write(tmp_path / "b.yaml", "base: a.yaml\ntraining: {warmup_steps: 7}\n")
    cfg = load_config(write(tmp_path / "c.yaml", "base: b.yaml\n"))
    assert (cfg.training.learning_rate, cfg.training.warmup_steps) == (3e-4, 7)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"c.yaml": "base: missing.yaml\n"}, r"'base: missing.yaml' not found"),
        ({"c.yaml": "base: 3\n"}, r"'base' must name a YAML file"),
        ({"c.yaml": "base: d.yaml\n", "d.yaml": "base: c.yaml\n"}, r"makes a loop"),
        ({"c.yaml": "base: d.yaml\n", "d.yaml": "model: {fusion: {dimm: 3}}\n"}, r"dimm"),
    ],
)
def test_bad_bases_name_the_file(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_the_gpu_configs_share_one_model_block() -> None:
    configs = ROOT / "atlas" / "configs"
    model = load_config(configs / "full_model.yaml").model
    for name in ("train_config.yaml", "single_gpu.yaml", "8gpu.yaml", "8gpu_large_batch.yaml"):
        assert load_config(configs / name).model == model, name
        assert "vggt_1b" not in (configs / name).read_text()  # said once, in full_model.yaml
