"""`atlas data convert`: HDF5 -> LeRobotDataset v3.0 -> training batches equal the HDF5 ones."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from atlas.cli import main
from atlas.config.schema import AtlasConfig
from atlas.data.build import build_datasets
from atlas.data.lerobot_write import convert_to_lerobot
from atlas.data.synthetic import generate_synthetic
from atlas.data.transforms import preprocess_frames

CODEC_MEAN_ERROR = 6.0  # mean grey-level error of AV1 (crf 30) on the synthetic scenes


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("hdf5") / "suite", 2, 2, 10, 64, seed=0)


@pytest.fixture(scope="module")
def converted(suite: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lerobot")
    for kind in ("video", "image"):
        args = ["data", "convert", str(suite), "--out", str(out / kind)]
        assert main(args + (["--images"] if kind == "image" else [])) == 0
    return {"video": out / "video", "image": out / "image"}


def _cfg(fmt: str, path: Path, orientation: str) -> AtlasConfig:
    cfg = AtlasConfig()
    d = cfg.data
    d.format, d.paths, d.orientation, d.val_split = fmt, [str(path)], orientation, 0.0  # type: ignore[assignment]
    d.image_size, d.history = 56, 2
    cfg.model.action_head.chunk_size = 3
    return cfg


def test_layout_is_lerobot_v30(converted: dict[str, Path]) -> None:
    root = converted["video"]
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 4
    assert info["features"]["observation.images.image"]["dtype"] == "video"
    assert info["features"]["observation.state"]["shape"] == [8]
    data = pq.read_schema(root / "data" / "chunk-000" / "file-000.parquet")
    assert str(data.field("action").type) == "fixed_size_list<element: float>[7]"
    episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    starts = episodes.column("videos/observation.images.image/from_timestamp").to_pylist()
    assert starts[0] == 0.0 and starts == sorted(starts)  # episodes back to back in one file
    assert (
        root / "videos" / "observation.images.wrist_image" / "chunk-000" / "file-000.mp4"
    ).is_file()
    assert pq.read_table(root / "meta" / "tasks.parquet").column_names == ["task_index", "task"]


@pytest.mark.parametrize("kind", ["video", "image"])
@pytest.mark.parametrize("orientation", ["vflip", "rot180"])
def test_round_trip_gives_the_hdf5_batches(
    suite: Path, converted: dict[str, Path], kind: str, orientation: str
) -> None:
    """Same actions, states, masks and instructions; images within the codec's error.

    The LeRobot frames are stored rotated 180 degrees (as the publications store them) and the
    reader undoes that, so `data.orientation` means the same for both formats: the simulator's
    frames with that orientation applied, which is what a rollout feeds the policy.
    """
    ref, _, _ = build_datasets(_cfg("libero_hdf5", suite, orientation))
    got, _, _ = build_datasets(_cfg("lerobot", converted[kind], orientation))
    assert len(got) == len(ref) and got.tasks == ref.tasks
    keys = list(range(0, len(ref), 3))
    for a, b in zip(ref.__getitems__(keys), got.__getitems__(keys)):
        for key in ("actions", "action_mask", "proprio"):
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
        assert (b["instruction"], b["timestep"]) == (a["instruction"], a["timestep"])
        diff = (b["images"].float() - a["images"].float()).abs()
        assert diff.max() == 0 if kind == "image" else diff.mean() < CODEC_MEAN_ERROR
    # What a rollout feeds the policy: the simulator's (HDF5) frame through predict_action's
    # preprocessing with the policy's data.orientation.
    ep = ref.index.episodes[0]
    with h5py.File(ref.index.files[ep.file], "r") as f:
        raw = f["data"][ep.demo]["obs"]["agentview_rgb"][0]
    fed = preprocess_frames(raw, 56, orientation)[0].float()
    trained = got[0]["images"][0].float()
    assert (fed - trained).abs().mean() < (1e-9 if kind == "image" else CODEC_MEAN_ERROR)


def test_refuses_a_non_empty_output(suite: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["data", "convert", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_a_failed_conversion_leaves_nothing(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_demo.hdf5").write_bytes(b"not hdf5")
    assert main(["data", "convert", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "x_demo.hdf5" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_inspect_and_stats_read_the_converted_folder(converted: dict[str, Path], capsys) -> None:
    assert main(["data", "inspect", str(converted["video"])]) == 0
    out = capsys.readouterr().out
    assert "LeRobotDataset v3.0" in out and "observation.images.wrist_image" in out
    assert main(["data", "stats", str(converted["image"])]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_episodes"] == 4 and len(stats["proprio"]["mean"]) == 8
    assert np.isfinite(stats["action"]["q99"]).all()


def test_many_files_read_like_one(suite: Path, converted: dict[str, Path], tmp_path: Path) -> None:
    """Size limits of 0 MB start new data and video files at episode boundaries."""
    split = convert_to_lerobot(suite, tmp_path / "split", data_file_mb=0, video_file_mb=0)
    data = sorted(p.name for p in (split / "data" / "chunk-000").iterdir())
    videos = list((split / "videos" / "observation.images.image" / "chunk-000").iterdir())
    assert len(data) == 4 and len(videos) == 4  # one file per episode, on any number of cores
    one, _, _ = build_datasets(_cfg("lerobot", converted["video"], "vflip"))
    many, _, _ = build_datasets(_cfg("lerobot", split, "vflip"))
    keys = list(range(0, len(one), 5))
    for a, b in zip(one.__getitems__(keys), many.__getitems__(keys)):
        torch.testing.assert_close(b["actions"], a["actions"], rtol=0, atol=0)
        assert (b["images"].float() - a["images"].float()).abs().mean() < CODEC_MEAN_ERROR
