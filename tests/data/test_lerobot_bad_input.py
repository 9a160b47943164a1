"""Bad LeRobotDataset folders: one clear error naming the file or key, before any training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _lerobot_helpers import CAMERAS, FIXTURES, copy_fixture

from atlas.cli import main
from atlas.config import ConfigError, load_config
from atlas.config.schema import AtlasConfig, SyntheticConfig
from atlas.data.errors import DataError
from atlas.data.lerobot import build_lerobot_index

DEBUG_YAML = Path(__file__).resolve().parents[2] / "atlas" / "configs" / "debug.yaml"
VIDEO = Path("videos") / CAMERAS[1] / "chunk-000" / "file-000.mp4"


def _not_lerobot(root: Path) -> str:
    (root / "meta" / "info.json").unlink()
    return "LeRobotDataset: no meta/info.json"


def _unknown_version(root: Path) -> str:
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps(info | {"codebase_version": "v9.9"}))
    return "codebase_version 'v9.9' is not supported"


def _missing_video(root: Path) -> str:
    (root / VIDEO).unlink()
    return f"{root / VIDEO}: {CAMERAS[1]}: video file not found"


def _truncated_video(root: Path) -> str:
    data = (root / VIDEO).read_bytes()
    (root / VIDEO).write_bytes(data[: len(data) // 2])
    return f"{root / VIDEO}: {CAMERAS[1]}: "


def _missing_data(root: Path) -> str:
    (root / "data" / "chunk-000" / "file-000.parquet").unlink()
    return "file-000.parquet: data file not found"


BREAKS: dict[str, Callable[[Path], str]] = {
    "not_lerobot": _not_lerobot,
    "unknown_version": _unknown_version,
    "missing_video": _missing_video,
    "truncated_video": _truncated_video,
    "missing_data": _missing_data,
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_one_clear_line(name: str, tmp_path: Path, capsys) -> None:
    root = copy_fixture("v30_video", tmp_path)
    expected = BREAKS[name](root)
    with pytest.raises(DataError, match=None) as e:
        build_lerobot_index(root, CAMERAS)
    assert expected in str(e.value)
    assert main(["data", "inspect", str(root)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "Traceback" not in err


def test_a_camera_the_dataset_lacks_lists_the_keys_it_has() -> None:
    with pytest.raises(DataError) as e:
        build_lerobot_index(FIXTURES / "v30_image", ["observation.images.top"])
    assert "'observation.images.top'" in str(e.value)
    assert f"it has: {CAMERAS[0]}, {CAMERAS[1]}" in str(e.value)
    with pytest.raises(DataError, match="no state feature 'observation.joints'.*observation.state"):
        build_lerobot_index(FIXTURES / "v30_image", CAMERAS, state_key="observation.joints")


def test_training_refuses_it_with_exit_2(tmp_path: Path, capsys) -> None:
    root = copy_fixture("v30_video", tmp_path)
    _missing_video(root)
    overrides = ["data.format=lerobot", f"data.paths=[{root}]", "data.synthetic=null"]
    overrides += [f"data.cameras=[{CAMERAS[0]},{CAMERAS[1]}]", f"checkpoint.save_dir={tmp_path}/r"]
    args = ["train", *(arg for o in overrides for arg in ("--set", o))]
    assert main(args) == 2
    assert "video file not found" in capsys.readouterr().err


def test_synthetic_data_with_the_lerobot_format_is_refused() -> None:
    """data.synthetic writes HDF5 files, which a LeRobot reader cannot read."""
    cfg = AtlasConfig()
    cfg.data.format, cfg.data.synthetic = "lerobot", SyntheticConfig()
    assert [key for key, _ in cfg.validate()] == ["data.synthetic"]
    with pytest.raises(ConfigError, match="data.synthetic"):
        load_config(DEBUG_YAML, ["data.format=lerobot"])  # debug.yaml generates synthetic data
