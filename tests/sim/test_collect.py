"""Collection bookkeeping without physics: task ids, output-folder checks, the released HDF5
layout of assembled files, and a killed collection that resumes where it stopped.

The simulator's own packages are needed (task list, BDDL files) but no env is created: the worker
is replaced by one that writes a small fake episode.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from atlas.eval import libero_setup

pytestmark = pytest.mark.skipif(
    not libero_setup.simulator_available(), reason="LIBERO simulator not installed"
)


@pytest.fixture(scope="module")
def spatial():
    from atlas.sim.scene import suite_tasks

    return suite_tasks("libero_spatial")


def _plan(tasks, out: Path, demos: int = 2, **kw):
    from atlas.sim.collect import CollectPlan

    return CollectPlan("libero_spatial", tuple(tasks), demos, out, **kw)


def test_task_ids(spatial) -> None:
    from atlas.sim.collect import CollectError, parse_task_ids

    assert parse_task_ids("0-2,5", 10, "libero_spatial") == [0, 1, 2, 5]
    with pytest.raises(CollectError, match="task ids 0-9, got \\[10\\]"):
        parse_task_ids("3,10", 10, "libero_spatial")
    with pytest.raises(CollectError, match="bad task list"):
        parse_task_ids("one", 10, "libero_spatial")


def test_layout_seeds_are_distinct_across_tasks_and_bases() -> None:
    from atlas.sim.collect import layout_seed

    seeds = {layout_seed(b, t, i) for b in range(2) for t in range(10) for i in range(200)}
    assert len(seeds) == 2 * 10 * 200 and min(seeds) > 50


def _fake_episode(steps: int, seed: int):
    from atlas.sim.episode import Episode
    from atlas.sim.expert import GraspOption

    rng = np.random.default_rng(seed)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (steps, 1))
    return Episode(
        model_xml="<mujoco/>",
        option=GraspOption(),
        attempts=1,
        states=rng.normal(size=(steps, 92)),
        actions=rng.uniform(-1, 1, size=(steps, 7)),
        joints=rng.normal(size=(steps, 7)),
        eef_pos=rng.normal(size=(steps, 3)),
        eef_quat=quat,
        gripper=rng.normal(size=(steps, 2)),
        final_state=rng.normal(size=92),
        images={
            c: rng.integers(0, 255, (steps, 16, 16, 3), dtype=np.uint8)
            for c in ("agentview_rgb", "eye_in_hand_rgb")
        },
    )


class _FakeWorker:
    """Stands in for worker.collect_seed: seeds 1 and 4 fail, the rest are kept."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[int] = []
        self.stop_after = stop_after

    def __call__(self, task, index, seed, workdir, image_size, max_steps):
        from atlas.sim import worker
        from atlas.sim.demo_file import write_demo_part

        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(index)
        status = "failed" if index in (1, 4) else "kept"
        rec = {"index": index, "seed": seed, "status": status}
        if status == "kept":
            write_demo_part(worker.part_path(workdir, index), _fake_episode(5 + index, seed))
            rec.update(steps=5 + index, attempts=1)
        worker.record_path(workdir, index).write_text(json.dumps(rec))
        return rec


def test_killed_collection_resumes_and_writes_the_released_layout(spatial, tmp_path, monkeypatch):
    from atlas.sim import collect
    from atlas.sim.demo_file import task_file_name

    out = tmp_path / "scripted"
    plan = _plan(spatial[:1], out, demos=3, image_size=16)
    first = _FakeWorker(stop_after=2)
    monkeypatch.setattr(collect, "collect_seed", first)
    with pytest.raises(KeyboardInterrupt):
        collect.collect(plan, progress=False)
    final = out / task_file_name(spatial[0])
    assert first.calls == [0, 1] and not final.exists()  # nothing half-written

    # A run killed while assembling leaves its temporary task file; it must not block a resume.
    (out / f".{final.name}.tmp").write_bytes(b"partial")
    collect.check_out_dir(plan, {task_file_name(t) for t in spatial})
    second = _FakeWorker()
    monkeypatch.setattr(collect, "collect_seed", second)
    (row,) = collect.collect(plan, progress=False)
    assert second.calls == [2, 3]  # seeds 0 and 1 were not run again
    assert row["demos"] == 3 and row["expert_successes"] == 3 and row["expert_attempts"] == 4
    assert row["refused_by_camera_check"] == 0
    assert not (out / collect.WORK_DIR / spatial[0].name).exists()
    assert sorted(p.name for p in out.iterdir()) == [".collect", "collect_summary.json", final.name]

    with h5py.File(final) as f:
        data = f["data"]
        assert list(data) == ["demo_0", "demo_1", "demo_2"]
        assert data.attrs["num_demos"] == 3 and data.attrs["total"] == 5 + 7 + 8
        assert json.loads(data.attrs["problem_info"])["language_instruction"].startswith(
            "pick the akita"
        )
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_kwargs"]["camera_heights"] == 16
        assert "libero_spatial/" in data.attrs["bddl_file_name"]
        assert data.attrs["bddl_file_content"].startswith("(define")
        demo = data["demo_1"]  # seed index 2
        assert demo.attrs["num_samples"] == 7 and demo.attrs["init_state"].shape == (92,)
        np.testing.assert_array_equal(demo.attrs["init_state"], demo["states"][0])
        for key, dtype in [("actions", "f8"), ("states", "f8"), ("robot_states", "f8")]:
            assert demo[key].dtype == np.dtype(dtype)
        assert demo["robot_states"].shape == (7, 9) and demo["obs/ee_states"].shape == (7, 6)
        assert demo["dones"][:].tolist() == [0] * 6 + [1] and demo["rewards"].dtype == np.uint8
        assert demo["obs/agentview_rgb"].chunks is None  # contiguous, as LIBERO writes images

    from atlas.data.libero_hdf5 import build_index

    index = build_index(out, ["agentview_rgb", "eye_in_hand_rgb"])
    assert len(index.episodes) == 3
    assert index.tasks[0].startswith("pick up the black bowl between the plate")


def test_output_folder_of_another_collection_is_refused(spatial, tmp_path) -> None:
    from atlas.data.synthetic import generate_synthetic
    from atlas.sim.collect import WORK_DIR, CollectError, check_out_dir
    from atlas.sim.demo_file import task_file_name

    names = {task_file_name(t) for t in spatial}
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    with pytest.raises(CollectError, match="notes.txt"):
        check_out_dir(_plan(spatial[:1], stray), names)

    other = tmp_path / "other_suite"
    (other / WORK_DIR).mkdir(parents=True)
    (other / WORK_DIR / "collection.json").write_text(
        '{"suite": "libero_object", "image_size": 128}'
    )
    with pytest.raises(CollectError, match="libero_object"):
        check_out_dir(_plan(spatial[:1], other), names)

    # A file named like a spatial task but recorded elsewhere (here: the synthetic generator).
    synth = generate_synthetic(tmp_path / "synth", tasks=1, demos=1, steps=3, image_size=16)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    next(synth.glob("*.hdf5")).rename(mixed / task_file_name(spatial[0]))
    with pytest.raises(CollectError, match="atlas_synthetic"):
        check_out_dir(_plan(spatial[:1], mixed), names)


def test_summary_counts_first_grasps_and_stalled_fallbacks(spatial) -> None:
    from atlas.sim.collect import task_summary

    kept = {"status": "kept", "steps": 90}
    records = {
        0: {**kept, "attempts": 1, "stalled": []},
        1: {**kept, "attempts": 2, "stalled": []},
        2: {**kept, "attempts": 4, "stalled": ["above", "down"]},
        3: {"status": "failed", "search_s": 3.0},
        4: {"status": "rejected"},
    }
    row = task_summary(spatial[1], records, demos=3)
    assert (row["first_grasp_successes"], row["stalled_demos"], row["demos"]) == (1, 1, 3)
    assert (row["expert_successes"], row["expert_attempts"], row["layouts_rejected"]) == (3, 4, 1)
