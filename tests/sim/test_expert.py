"""The scripted expert's geometry and phase machine, in a kinematic stand-in for the simulator.

The stand-in moves the end effector 1 cm per saturated step (what OSC_POSE does in LIBERO), and
the object rides with a closed gripper that is within 1.5 cm of the grasp point.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from atlas.sim.expert import OPENING, Goal, GraspOption, ObjectBox, ScriptedExpert, grasp_options


@pytest.mark.parametrize("side", [0.0, 90.0, 180.0, 270.0, 45.0])
def test_fingers_are_radial(side: float) -> None:
    option = GraspOption(side=side, radius=0.047)
    # At yaw 0 (gripper pointing down) the fingers close along world y.
    fingers = Rotation.from_euler("z", option.yaw).apply([0.0, 1.0, 0.0])
    assert abs(np.cross(fingers, option.direction)[2]) < 1e-9
    assert -np.pi / 2 <= option.yaw <= np.pi / 2


def test_bowls_are_grasped_by_the_rim_facing_the_robot_first() -> None:
    bowl = grasp_options(Goal("on", "akita_black_bowl_1", "plate_1"))
    assert bowl[0].side == 180.0 and all(o.radius == pytest.approx(0.047) for o in bowl)
    assert len({o.side for o in bowl}) == len(bowl) >= 3
    assert all(o.radius == 0.0 for o in grasp_options(Goal("in", "milk_1", "basket_1")))


def _box(half: list[float]) -> ObjectBox:
    return ObjectBox(-np.array(half), np.array(half))


def test_flat_boxes_are_gripped_at_their_centre_across_the_short_side() -> None:
    # libero_object's cream cheese: 8.2 x 4.2 x 1.8 cm, the long side along world x.
    options = grasp_options(Goal("in", "cream_cheese_1", "basket_1"), _box([0.041, 0.021, 0.009]))
    assert all(o.height == 0.0 and o.fingers == 90.0 for o in options)
    for o in options:
        fingers = Rotation.from_euler("z", o.yaw).apply([0.0, 1.0, 0.0])
        assert abs(fingers[1]) == pytest.approx(1.0)  # across the 4.2 cm side, along y
    # The centre first, then slid along the long side, both ways (neighbours block the hand).
    assert [o.radius for o in options] == [0.0, 0.026, -0.026]
    assert all(o.direction[0] == pytest.approx(1.0) for o in options)


def test_tall_objects_are_gripped_below_their_top_and_lifted_clear() -> None:
    # libero_object's ketchup: 3.7 x 5.7 x 14.5 cm; a can: 6.3 x 6.3 x 7.6 cm.
    ketchup = grasp_options(Goal("in", "ketchup_1", "basket_1"), _box([0.018, 0.028, 0.0725]))
    assert [o.side for o in ketchup] == [0.0, 90.0]
    assert all(o.height == pytest.approx(0.0725 - 0.028, abs=1e-3) for o in ketchup)
    assert all(o.lift == pytest.approx(0.145 + 0.06, abs=1e-3) for o in ketchup)
    can = grasp_options(Goal("in", "alphabet_soup_1", "basket_1"), _box([0.0315, 0.0315, 0.038]))
    assert all(o.height == 0.02 and o.lift == pytest.approx(0.15) for o in can)
    # An axis wider than the opening is never straddled.
    wide = grasp_options(Goal("in", "box_1", "basket_1"), _box([OPENING, 0.03, 0.05]))
    assert [o.side for o in wide] == [90.0]


def test_bowls_ignore_the_box() -> None:
    goal = Goal("on", "akita_black_bowl_1", "plate_1")
    assert grasp_options(goal, _box([0.055, 0.055, 0.03])) == grasp_options(goal)


class _Kinematic:
    """Point end effector, one object, the target: enough to drive every phase."""

    def __init__(self, obj: list[float], target: list[float]) -> None:
        self.eef = np.array([-0.2, 0.0, 1.17])
        self.quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.obj, self.target = np.array(obj), np.array(target)
        self.closed, self.attached = False, None

    def obs(self) -> dict[str, np.ndarray]:
        return {
            "robot0_eef_pos": self.eef.copy(),
            "robot0_eef_quat": self.quat.copy(),
            "bowl_pos": self.obj.copy(),
            "plate_pos": self.target.copy(),
        }

    def step(self, action: np.ndarray, grasp: np.ndarray) -> None:
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        self.eef = self.eef + 0.01 * action[:3]
        rot = Rotation.from_rotvec(0.1 * action[3:6]) * Rotation.from_quat(self.quat)
        self.quat = rot.as_quat()
        closing = action[6] > 0
        if closing and not self.closed and np.linalg.norm(self.eef - grasp) < 0.015:
            self.attached = self.obj - self.eef
        if not closing:
            if self.attached is not None:  # released: drops onto whatever is below
                self.obj = self.obj * [1, 1, 0] + [0, 0, self.target[2] + 0.01]
            self.attached = None
        self.closed = closing
        if self.attached is not None:
            self.obj = self.eef + self.attached


def test_expert_carries_the_object_onto_the_target() -> None:
    world = _Kinematic(obj=[-0.05, 0.2, 0.90], target=[0.06, 0.2, 0.90])
    option = GraspOption(side=180.0, radius=0.047, height=0.025)
    expert = ScriptedExpert(Goal("on", "bowl", "plate"), option)
    grasp = world.obj + [-0.047, 0.0, 0.025]
    phases = []
    for _ in range(400):
        if expert.finished:
            break
        world.step(expert.act(world.obs()), grasp)
        phases.append(expert.PHASES[min(expert.phase, len(expert.PHASES) - 1)])
    assert expert.finished
    assert list(dict.fromkeys(phases)) == list(ScriptedExpert.PHASES)
    assert np.linalg.norm((world.obj - world.target)[:2]) < 0.01
    # The final orientation is the grasp's: pointing down, yawed so the fingers are radial.
    want = Rotation.from_euler("z", option.yaw) * Rotation.from_quat([1.0, 0.0, 0.0, 0.0])
    assert (want * Rotation.from_quat(world.quat).inv()).magnitude() < 0.05


def test_goal_from_bddl_goal_state() -> None:
    class Env:
        class env:  # noqa: N801 - mirrors ControlEnv.env
            parsed_problem = {"goal_state": [["In", "milk_1", "basket_1_contain_region"]]}

    assert Goal.from_env(Env()) == Goal("in", "milk_1", "basket_1")
    Env.env.parsed_problem = {"goal_state": [["Open", "drawer_1"]]}
    with pytest.raises(ValueError, match="one On/In goal"):
        Goal.from_env(Env())


class _ReachLimited(_Kinematic):
    """The kinematic world, with the end effector unable to pass `y_max` (an arm at full reach)."""

    def __init__(self, obj: list[float], target: list[float], y_max: float) -> None:
        super().__init__(obj, target)
        self.y_max = y_max

    def step(self, action: np.ndarray, grasp: np.ndarray) -> None:
        super().step(action, grasp)
        self.eef[1] = min(self.eef[1], self.y_max)


def _run(world: _Kinematic, option: GraspOption) -> ScriptedExpert:
    expert = ScriptedExpert(Goal("on", "bowl", "plate"), option)
    grasp = world.obj + option.radius * option.direction + [0, 0, option.height]
    for _ in range(400):
        if expert.finished:
            break
        world.step(expert.act(world.obs()), grasp)
    return expert


def test_a_phase_that_runs_out_its_steps_is_recorded_as_a_stall() -> None:
    option = GraspOption(side=180.0, radius=0.047, height=0.025)
    clean = _run(_Kinematic(obj=[-0.05, 0.2, 0.90], target=[0.06, 0.2, 0.90]), option)
    assert clean.finished and clean.stalled == []
    # The grasp point lies 2 cm beyond the reach: the approach times out while nothing moves.
    world = _ReachLimited(obj=[-0.05, 0.3, 0.90], target=[0.06, 0.2, 0.90], y_max=0.28)
    stalled = _run(world, option)
    assert stalled.finished and stalled.stalled[:2] == ["above", "down"]
