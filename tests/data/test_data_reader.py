"""The LIBERO HDF5 reader: paths, instructions, samples, chunks, history, orientation, no-ops."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from atlas.data.dataset import LiberoDataset
from atlas.data.errors import DataError
from atlas.data.libero_hdf5 import build_index, instruction_from_filename, resolve_paths
from atlas.data.transforms import preprocess_frames


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "libero_spatial/pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it"
            "_on_the_plate_demo.hdf5",
            "pick up the black bowl between the plate and the ramekin and place it on the plate",
        ),
        (
            "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet_demo.hdf5",
            "close the top drawer of the cabinet",
        ),
        (
            "libero_10/LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the"
            "_basket_demo.hdf5",
            "put both the alphabet soup and the tomato sauce in the basket",
        ),
    ],
)
def test_instruction_from_filename(name: str, expected: str) -> None:
    assert instruction_from_filename(name) == expected


def test_instruction_source_problem_info(make_file) -> None:
    path = make_file("KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5")
    assert build_index(path, ["agentview_rgb"]).tasks == ["turn on the stove"]
    index = build_index(path, ["agentview_rgb"], instruction_source="problem_info")
    assert index.tasks == ["the problem info wording"]


def test_paths_folder_files_globs_and_mixed_suites(tmp_path: Path, make_file) -> None:
    (tmp_path / "suite_a").mkdir()
    (tmp_path / "suite_b").mkdir()
    a = make_file("suite_a/x_demo.hdf5")
    b = make_file("suite_b/y_demo.hdf5")
    (tmp_path / ".suite_c.tmp-1").mkdir()
    make_file(".suite_c.tmp-1/z_demo.hdf5")  # a dataset still being written: not picked up
    assert resolve_paths(tmp_path) == [a, b]
    assert resolve_paths([str(tmp_path / "suite_b"), a]) == [b, a]
    assert resolve_paths(str(tmp_path / "*" / "*_demo.hdf5")) == [a, b]
    assert (
        len(build_index([tmp_path / "suite_a", tmp_path / "suite_b"], ["agentview_rgb"]).tasks) == 2
    )


def _dataset(path: Path, **kw) -> LiberoDataset:
    cameras = kw.pop("cameras", ["agentview_rgb", "eye_in_hand_rgb"])
    index = build_index(path, cameras, filter_noops=kw.pop("filter_noops", False))
    kw.setdefault("image_size", 8)
    kw.setdefault("orientation", "none")
    return LiberoDataset(index, range(len(index.episodes)), cameras=cameras, **kw)


def test_sample_contract(make_file) -> None:
    ds = _dataset(make_file(lengths=[5, 3]), chunk_size=2, image_size=14, orientation="vflip")
    assert len(ds) == 8
    s = ds[6]  # demo_1, step 1
    assert s["images"].dtype == torch.uint8 and s["images"].shape == (2, 3, 14, 14)
    assert s["actions"].dtype == torch.float32 and s["actions"].shape == (2, 7)
    assert s["action_mask"].dtype == torch.bool and s["proprio"].shape == (8,)
    assert (s["task_index"], s["episode_index"], s["timestep"]) == (0, 1, 1)
    assert s["instruction"] == "task"
    np.testing.assert_allclose(s["proprio"].numpy(), [1, 0, 0, 0, 0, 0, 1, 1])
    assert ds[(6, 4)]["timestep"] == 1  # (index, epoch) keys


def test_chunk_targets_and_mask_at_the_episode_end(make_file) -> None:
    ds = _dataset(make_file(lengths=[5, 3]), chunk_size=4)
    s = ds[3]  # demo_0, step 3 of 5: steps 3, 4 valid, then padding
    np.testing.assert_allclose(s["actions"][:, 0].numpy(), [0.03, 0.04, 0.04, 0.04], atol=1e-7)
    assert s["action_mask"].tolist() == [True, True, False, False]
    s = ds[5]  # demo_1, step 0 of 3: the chunk never crosses into another demo
    np.testing.assert_allclose(s["actions"][:, 0].numpy(), [0.0, 0.01, 0.02, 0.02], atol=1e-7)
    np.testing.assert_allclose(s["actions"][:, 1].numpy(), [0.01] * 4, atol=1e-7)
    assert s["action_mask"].tolist() == [True, True, True, False]


def test_history_frames_repeat_the_first_frame(make_file) -> None:
    ds = _dataset(make_file(lengths=[5]), history=3)

    def steps_of(i: int) -> list[int]:  # frame s = h * cameras + c; pixel value = timestep
        return [int(ds[i]["images"][s, 0, 4, 4]) for s in range(6)]

    assert steps_of(0) == [0, 0, 0, 0, 0, 0]
    assert steps_of(1) == [1, 1, 0, 0, 0, 0]
    assert steps_of(4) == [4, 4, 3, 3, 2, 2]
    assert int(ds[4]["images"][1, 0, 0, 0]) == 201  # frame 1 is the second camera


def test_orientation_transforms() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 3), dtype=np.uint8)
    chw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    assert torch.equal(preprocess_frames(frames, 6, "none"), chw)
    assert torch.equal(preprocess_frames(frames, 6, "vflip"), chw.flip(2))
    assert torch.equal(preprocess_frames(frames, 6, "rot180"), chw.flip(2, 3))
    assert torch.equal(preprocess_frames(frames[0], 6, "vflip"), chw[:1].flip(2))  # one frame
    out = preprocess_frames(frames, 14, "vflip")
    assert out.shape == (2, 3, 14, 14) and out.dtype == torch.uint8 and out.is_contiguous()
    with pytest.raises(ValueError):
        preprocess_frames(frames, 6, "mirror")  # type: ignore[arg-type]


def test_dataset_applies_orientation(make_file) -> None:
    top = _dataset(make_file(lengths=[2]), orientation="none")[1]["images"]
    flipped = _dataset(make_file(lengths=[2]), orientation="vflip")[1]["images"]
    assert int(top[0, 0, 0, 0]) == 200 and int(flipped[0, 0, -1, 0]) == 200


def test_noop_filtering(make_file) -> None:
    path = make_file(lengths=[6])
    with h5py.File(path, "r+") as f:  # steps 2 and 3 become no-ops, step 4 changes the gripper
        actions = f["data/demo_0/actions"][()]
        actions[2:5, :6] = 0.0
        actions[4, 6] = 1.0
        f["data/demo_0/actions"][...] = actions
    ds = _dataset(path, filter_noops=True, history=2, chunk_size=2)
    # step 0 has a zero motion too (the first step has no previous gripper to compare with)
    assert [ds[i]["timestep"] for i in range(len(ds))] == [1, 4, 5]
    s = ds[1]  # step 4: previous KEPT frame is step 1, next kept action is step 5's
    assert [int(s["images"][k, 0, 4, 4]) for k in (0, 2)] == [4, 1]
    np.testing.assert_allclose(s["actions"][:, 0].numpy(), [0.0, 0.05], atol=1e-7)


def test_index_reads_no_image(make_file, monkeypatch) -> None:
    """The metadata pass never touches the (large) image datasets."""
    read = h5py.Dataset.__getitem__

    def guarded(self, key):
        assert not self.name.endswith("_rgb"), f"image read during indexing: {self.name}"
        return read(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", guarded)
    assert build_index(make_file(lengths=[4, 4]), ["agentview_rgb"]).num_samples == 8


def test_missing_camera_is_a_data_error(make_file) -> None:
    with pytest.raises(DataError, match="obs/wrist"):
        build_index(make_file(), ["wrist"])


def test_raw_reads_equal_h5py_reads(make_file) -> None:
    """Contiguous image datasets are read with preadv, chunked ones through h5py: same pixels."""
    raw = _dataset(make_file("raw_demo.hdf5", lengths=[6, 4]), history=2, image_size=14)
    h5 = _dataset(make_file("h5_demo.hdf5", lengths=[6, 4], chunked=True), history=2, image_size=14)
    for i in range(len(raw)):
        assert torch.equal(raw[i]["images"], h5[i]["images"])
    sources = [*raw._reader._sources.values(), *h5._reader._sources.values()]
    assert [s.fd is not None for s in sources] == [True] * 4 + [False] * 4
