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
