"""Layout sampling in the real simulator: overlapping placements are rejected, stacked ones kept."""

from __future__ import annotations

import pytest

from atlas.eval import libero_setup

pytestmark = pytest.mark.skipif(
    not libero_setup.simulator_available(), reason="LIBERO simulator not installed"
)


@pytest.mark.parametrize(
    "task_id, index, valid",
    [
        (0, 0, True),
        (0, 3, False),  # the sampler put two objects overlapping: one is ejected while settling
        (5, 0, True),  # the bowl on the ramekin slides 3.7 cm as it settles, as in LIBERO's own
    ],
)
def test_layout_validity(task_id: int, index: int, valid: bool) -> None:
    from atlas.sim.collect import layout_seed
    from atlas.sim.scene import TaskScene, suite_tasks

    scene = TaskScene(suite_tasks("libero_spatial")[task_id])
    try:
        layout = scene.sample_layout(layout_seed(0, task_id, index))
        assert (layout is not None) == valid
        if layout is not None:
            state, xml, obs = layout
            assert state.shape == (scene.official.shape[1],) and xml.startswith("<mujoco")
            assert "akita_black_bowl_1_pos" in obs
    finally:
        scene.close()


def test_restore_starts_a_new_episode_for_the_step_limit() -> None:
    from atlas.sim.collect import layout_seed
    from atlas.sim.scene import WAIT_ACTION, TaskScene, suite_tasks

    scene = TaskScene(suite_tasks("libero_spatial")[0])
    try:
        state, _, _ = scene.sample_layout(layout_seed(0, 0, 0))
        inner = scene.env.env
        inner.horizon = inner.timestep + 2
        scene.env.step(WAIT_ACTION)
        scene.env.step(WAIT_ACTION)
        with pytest.raises(ValueError, match="terminated"):
            scene.env.step(WAIT_ACTION)
        scene.restore(state)
        scene.env.step(WAIT_ACTION)  # the next attempt of the same layout runs
        assert inner.timestep == 1
    finally:
        scene.close()


def test_object_box_measures_the_collision_geoms() -> None:
    from atlas.sim.collect import layout_seed
    from atlas.sim.scene import TaskScene, suite_tasks

    # libero_object task 1: the cream cheese, a flat box lying on the table (8.2 x 4.2 x 1.8 cm).
    scene = TaskScene(suite_tasks("libero_object")[1])
    try:
        state = next(
            layout[0]
            for i in range(5)
            if (layout := scene.sample_layout(layout_seed(0, 1, i))) is not None
        )
        scene.restore(state)
        box = scene.object_box("cream_cheese_1")
        assert sorted(box.size[:2].round(3)) == pytest.approx([0.042, 0.082], abs=0.002)
        assert box.size[2] == pytest.approx(0.018, abs=0.001)
        assert box.lo[2] == pytest.approx(-box.hi[2], abs=0.001)  # the origin is at its centre
        with pytest.raises(KeyError):
            scene.object_box("no_such_object_1")
    finally:
        scene.close()
