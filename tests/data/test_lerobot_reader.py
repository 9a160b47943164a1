"""data.format: lerobot on folders written by the `lerobot` package itself (tests/fixtures/lerobot).

The fixtures were written by LeRobotDataset.create / add_frame / save_episode / finalize (lerobot
0.6.1, scripts/make_lerobot_fixture.py); written.npz holds what was given to add_frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _lerobot_helpers import CAMERAS, FIXTURES, write_v21, written

from atlas.data.dataset import LiberoDataset
from atlas.data.lerobot import build_lerobot_index

CODEC_MEAN_ERROR = 8.0  # mean |decoded - written| grey levels AV1 (crf 30, 64 px) stays under


def _dataset(root: Path, cameras=CAMERAS, **kw) -> LiberoDataset:
    index = build_lerobot_index(root, cameras, **kw)
    size = index.episodes[0].frame_shapes[cameras[0]][0]
    return LiberoDataset(
        index, range(len(index.episodes)), cameras=cameras, image_size=size, orientation="none"
    )


def _check_against_written(ds: LiberoDataset, exact_images: bool) -> None:
    ref = written()
    assert ds.tasks == list(ref["tasks"])
    for i in np.random.default_rng(0).permutation(len(ds)):  # random order: seeks back and forth
        sample, (e, k) = ds[int(i)], ds.locate(int(i))
        np.testing.assert_array_equal(sample["actions"][0].numpy(), ref[f"action_{e}"][k])
        np.testing.assert_array_equal(sample["proprio"].numpy(), ref[f"state_{e}"][k])
        assert sample["instruction"] == ref["tasks"][e]
        images = sample["images"].permute(0, 2, 3, 1).numpy().astype(np.int16)
        frames = ref[f"images_{e}"].astype(np.int16)  # [T, cameras, h, w, 3]
        if exact_images:
            np.testing.assert_array_equal(images, frames[k])
            continue
        errors = np.abs(images[None] - frames).mean(axis=(2, 3, 4))  # [T, cameras]
        assert errors[k].max() < CODEC_MEAN_ERROR
        assert (errors.argmin(axis=0) == k).all(), "decoded a neighbouring frame"


@pytest.mark.parametrize("name", ["v30_video", "v30_image"])
def test_reads_back_what_lerobot_wrote(name: str) -> None:
    ds = _dataset(FIXTURES / name)
    assert [len(ep.steps) for ep in ds.index.episodes] == [12, 9]
    _check_against_written(ds, exact_images=name == "v30_image")


def test_v21_layout_reads_the_same(tmp_path: Path) -> None:
    v21 = write_v21(FIXTURES / "v30_video", tmp_path / "v21")
    assert (v21 / "videos" / "chunk-000" / CAMERAS[1] / "episode_000001.mp4").is_file()
    _check_against_written(_dataset(v21), exact_images=False)


def test_libero_camera_names_find_the_publication_keys() -> None:
    index = build_lerobot_index(FIXTURES / "v30_image", ["agentview_rgb", "eye_in_hand_rgb"])
    src = index.sources[(0, "episode_000000")].cameras
    assert [src[c].key for c in ("agentview_rgb", "eye_in_hand_rgb")] == CAMERAS


def test_openpi_keys(tmp_path: Path) -> None:
    """openpi's copy names the features image / wrist_image / state / actions."""
    root = tmp_path / "openpi"
    rename = dict(
        zip([*CAMERAS, "observation.state", "action"], ["image", "wrist_image", "state", "actions"])
    )
    src = FIXTURES / "v30_image"
    for path in src.rglob("*"):
        if path.is_file():
            (root / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (root / path.relative_to(src)).write_bytes(path.read_bytes())
    info = json.loads((src / "meta" / "info.json").read_text())
    info["features"] = {rename.get(k, k): v for k, v in info["features"].items()}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    data = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data)
    pq.write_table(table.rename_columns([rename.get(n, n) for n in table.column_names]), data)
    _check_against_written(_dataset(root, ["image", "wrist_image"]), exact_images=True)
    assert (
        _dataset(root, ["agentview_rgb"])
        .index.sources[(0, "episode_000001")]
        .cameras["agentview_rgb"]
        .key
        == "image"
    )


def test_history_and_chunks_stay_within_the_episode() -> None:
    index = build_lerobot_index(FIXTURES / "v30_image", CAMERAS)
    ds = LiberoDataset(
        index, [0, 1], cameras=CAMERAS, image_size=64, history=2, chunk_size=4, orientation="none"
    )
    ref = written()
    first = ds[12]  # episode 1, step 0: the history repeats its first frame
    np.testing.assert_array_equal(first["images"][2:], first["images"][:2])
    np.testing.assert_array_equal(first["images"][0].permute(1, 2, 0), ref["images_1"][0, 0])
    last = ds[11]  # episode 0, its last step: the chunk runs past the end, masked
    assert last["action_mask"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(last["actions"].numpy(), np.repeat(ref["action_0"][11:], 4, 0))


def test_decodes_what_lerobot_decodes() -> None:
    """Episode 1 starts mid-file: its frames at from_timestamp + timestamp, as LeRobot reads them.

    AV1 decoding is bit-exact by specification; the YUV -> RGB step may round differently on
    another CPU's SIMD path, hence the tolerance of one grey level.
    """
    with np.load(FIXTURES / "lerobot_decoded.npz") as f:
        theirs = f["frames"].astype(np.int16)
    ds = _dataset(FIXTURES / "v30_video", [CAMERAS[0]])
    ours = [ds[12 + k]["images"][0].permute(1, 2, 0).numpy() for k in range(len(theirs))]
    assert np.abs(np.stack(ours).astype(np.int16) - theirs).max() <= 1
