"""A scripted pick-and-place expert for LIBERO that reads the simulator's privileged poses.

The expert drives robosuite's OSC_POSE controller with delta actions [7] (position, axis-angle,
gripper) through a short list of waypoints: above the grasp point, down, close, lift, over the
goal, down, open. It reads `<object>_pos` and `robot0_eef_pos/quat` from the observation and the
task's goal from the BDDL (`env.parsed_problem["goal_state"]`, e.g. `['on', 'akita_black_bowl_1',
'plate_1']` or `['in', 'alphabet_soup_1', 'basket_1_contain_region']`).

What the numbers below rest on (measured in the simulator):
- a saturated position action moves the end effector about 1 cm per step, not the 5 cm the
  action scale suggests, so the gains saturate only a few centimetres away from a waypoint;
- the black bowl (11 cm) is wider than the 8 cm gripper opening, so it is grasped by its rim,
  about 4.7 cm from its centre, with the fingers radial; which side works depends on what stands
  around the bowl, so a grasp is a `GraspOption` and the collector tries several;
- at the gripper's default orientation (pointing down) the fingers close along world y;
- some grasps cannot be reached exactly (libero_spatial task 1's bowl far to the robot's left,
  grasped from the robot's side: the wrist stalls 2 cm short, so "above" and "down" run out their
  step limits). A phase that ends on its step limit changes the action while the scene stands
  still, which no policy that sees only the scene can imitate; `stalled` records it;
- other objects are grasped across their middle, which their size decides (`ObjectBox`, from the
  collision geoms): the finger pads span -0.5 to +1.1 cm around the end effector, so flat boxes
  (cream cheese, butter: 1.8 cm tall) are gripped at their centre height with the fingers across
  the short side (the long one, 8.2 cm, is wider than the opening); the hand's underside sits
  about 5 cm above the end effector, so tall bottles and cartons are gripped 2.8 cm below their
  top (lower, the hand knocks them over on the way down); objects are lifted at least 15 cm and
  6 cm more than they are tall (less, they or the fingers sweep the basket's rim and push it
  away).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

# Action layout and limits of OSC_POSE delta control (docs/LIBERO.md §3).
OPEN, CLOSE = -1.0, 1.0
POS_GAIN = 1.0 / 0.02  # saturate 2 cm from the waypoint
ROT_GAIN = 1.0 / 0.15  # saturate 0.15 rad from the target orientation
# Gripper pointing down: 180 degrees about world x (quaternion x, y, z, w = 1, 0, 0, 0).
_DOWN = Rotation.from_quat([1.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class GraspOption:
    """Where to grasp the object, relative to its centre.

    side: direction in the table plane from the object's centre to the grasp point, in degrees
        (180 = the side facing the robot, which stands at -x).
    radius: metres from the centre (0 grasps the middle, fingers across `side`).
    height: end-effector height above the object's origin when closing, metres.
    lift: metres the hand rises above the grasp point before carrying.
    fingers: direction of the finger axis in the table plane, degrees; None: along `side`.
    """

    side: float = 180.0
    radius: float = 0.0
    height: float = 0.02
    lift: float = 0.12
    fingers: float | None = None

    @property
    def direction(self) -> np.ndarray:
        a = np.deg2rad(self.side)
        return np.array([np.cos(a), np.sin(a), 0.0])

    @property
    def yaw(self) -> float:
        """Gripper yaw (rad) that puts the finger axis along `fingers` (default: radial)."""
        axis = self.side if self.fingers is None else self.fingers
        yaw = np.deg2rad(axis) - np.pi / 2
        # The two fingers are symmetric: a half turn is the same grasp, so keep |yaw| <= 90 deg.
        return float((yaw + np.pi / 2) % np.pi - np.pi / 2)


@dataclass(frozen=True)
class Goal:
    """What to pick and where to put it: BDDL `(On obj target)` or `(In obj region)`."""

    predicate: str
    obj: str
    target: str

    @classmethod
    def from_env(cls, env: Any) -> Goal:
        """The single pick-and-place goal of a LIBERO `ControlEnv`, else ValueError."""
        goals = env.env.parsed_problem["goal_state"]
        if len(goals) != 1 or goals[0][0].lower() not in ("on", "in") or len(goals[0]) != 3:
            raise ValueError(f"the scripted expert handles one On/In goal, this task has {goals}")
        predicate, obj, target = goals[0]
        # `In x basket_1_contain_region` is about the basket body `basket_1`.
        body = target.removesuffix("_contain_region")
        return cls(predicate.lower(), obj, body)


@dataclass(frozen=True)
class ObjectBox:
    """The object's collision geoms as an axis-aligned box around its origin, world axes [3]."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def size(self) -> np.ndarray:
        return self.hi - self.lo


OPENING = 0.075  # widest grip, metres (the fingers open to 8 cm; keep a margin)
FLAT = 0.04  # objects lower than this are gripped at their centre height
# Lifting less than this carries the fingers into the basket's rim, which then slides away.
MIN_LIFT = 0.15


def grasp_options(goal: Goal, box: ObjectBox | None = None) -> list[GraspOption]:
    """Grasps to try, most likely first: rim grasps for bowls, centre grasps otherwise.

    Without `box` other objects get the grasp that suits cans (2 cm above the centre, fingers
    along x, then along y).
    """
    if "bowl" in goal.obj:
        # Facing the robot first (clear of cabinets and drawers), then the two flanks, then away.
        return [GraspOption(side, 0.047, 0.025) for side in (180.0, 90.0, 270.0, 0.0)]
    if box is None:
        return [GraspOption(side, 0.0, 0.02) for side in (0.0, 90.0)]
    width_x, width_y, tall = box.size
    if tall < FLAT:
        height = round(float(box.lo[2] + box.hi[2]) / 2, 3)
        long_axis = 0.0 if width_x >= width_y else 90.0
        # Sliding along the long side moves the hand's 20 cm span away from a close neighbour.
        slide = round(max(float(max(width_x, width_y)) / 2 - 0.015, 0.0), 3)
        offsets = [0.0, slide, -slide] if slide > 0.01 else [0.0]
        across = 90.0 - long_axis  # the fingers close across the short side
        return [GraspOption(long_axis, r, height, MIN_LIFT, across) for r in offsets]
    # Fingers along x close across the x extent; keep the axes the hand can straddle.
    axes = [a for a, w in ((0.0, width_x), (90.0, width_y)) if w <= OPENING] or [0.0, 90.0]
    height = round(max(0.02, float(box.hi[2]) - 0.028), 3)
    lift = round(max(MIN_LIFT, float(tall) + 0.06), 3)
    return [GraspOption(a, 0.0, height, lift) for a in axes]


@dataclass
class _Waypoint:
    """Drive towards `pos` with `gripper` until within `tol` metres or `max_steps` passed."""

    name: str
    pos: np.ndarray
    gripper: float
    tol: float
    max_steps: int
    min_steps: int = 0


class ScriptedExpert:
    """One attempt of one `GraspOption`: `act(obs) -> action [7]` until `finished`.

    The plan is recomputed from the live poses at every step (the object can shift while the
    gripper approaches it), and the place point follows the object's offset in the hand measured
    at the lift, so a grasp that slipped a little still lands on target.
    """

    def __init__(self, goal: Goal, option: GraspOption) -> None:
        self.goal, self.option = goal, option
        self.phase, self.steps_in_phase = 0, 0
        self._in_hand: np.ndarray | None = None  # eef - object when the lift starts
        self._lift_z = 0.0  # absolute carry height, fixed when the lift starts
        self._target_rot = Rotation.from_euler("z", option.yaw) * _DOWN
        # Approach phases that ended on their step limit instead of at their waypoint.
        self.stalled: list[str] = []

    PHASES = ("above", "down", "close", "lift", "carry", "lower", "release", "retreat")

    @property
    def finished(self) -> bool:
        return self.phase >= len(self.PHASES)

    def _waypoint(self, obs: dict[str, Any]) -> _Waypoint:
        obj = np.asarray(obs[f"{self.goal.obj}_pos"])
        grasp = obj + self.option.radius * self.option.direction
        grasp[2] = obj[2] + self.option.height
        name = self.PHASES[self.phase]
        if name == "above":
            return _Waypoint(name, grasp + [0, 0, 0.08], OPEN, 0.01, 60)
        if name == "down":
            return _Waypoint(name, grasp, OPEN, 0.006, 40)
        if name == "close":
            return _Waypoint(name, grasp, CLOSE, 0.0, 10, min_steps=10)
        eef = np.asarray(obs["robot0_eef_pos"])
        if self._in_hand is None:
            # The object rises with the hand from here on: freeze what the rest is relative to.
            self._in_hand, self._lift_z = eef - obj, grasp[2] + self.option.lift
        if name == "lift":
            return _Waypoint(name, eef * [1, 1, 0] + [0, 0, self._lift_z], CLOSE, 0.015, 40)
        target = np.asarray(obs[f"{self.goal.target}_pos"])
        place = target + self._in_hand * [1, 1, 0]
        if name == "carry":
            return _Waypoint(name, place * [1, 1, 0] + [0, 0, self._lift_z], CLOSE, 0.015, 80)
        # Release a little above the resting height: the object drops the last centimetres.
        rest = target[2] + self._in_hand[2] + (0.03 if self.goal.predicate == "on" else 0.06)
        if name == "lower":
            return _Waypoint(name, place * [1, 1, 0] + [0, 0, rest], CLOSE, 0.01, 40)
        if name == "release":
            return _Waypoint(name, place * [1, 1, 0] + [0, 0, rest], OPEN, 0.0, 8, min_steps=8)
        return _Waypoint(name, place * [1, 1, 0] + [0, 0, rest + 0.08], OPEN, 0.01, 30)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The next action [7] in [-1, 1]; advances the phase when its waypoint is reached."""
        wp = self._waypoint(obs)
        err = wp.pos - np.asarray(obs["robot0_eef_pos"])
        reached = np.linalg.norm(err) <= wp.tol and self.steps_in_phase >= wp.min_steps
        if reached or self.steps_in_phase >= wp.max_steps:
            if not reached and wp.min_steps < wp.max_steps:
                self.stalled.append(wp.name)
            self.phase, self.steps_in_phase = self.phase + 1, 0
            if self.finished:
                return np.array([0, 0, 0, 0, 0, 0, OPEN])
            wp = self._waypoint(obs)
            err = wp.pos - np.asarray(obs["robot0_eef_pos"])
        self.steps_in_phase += 1
        current = Rotation.from_quat(np.asarray(obs["robot0_eef_quat"]))
        rot_err = (self._target_rot * current.inv()).as_rotvec()
        action = np.concatenate([err * POS_GAIN, rot_err * ROT_GAIN, [wp.gripper]])
        return np.clip(action, -1.0, 1.0)
