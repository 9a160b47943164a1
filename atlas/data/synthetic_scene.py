"""The scripted tabletop world behind the synthetic dataset: scenes, the expert, the renderer.

Top view of a 0.5 m table. A few coloured blocks and one receptacle (plate, bowl or tray) lie at
random positions; the arm is drawn as a ring (dark: gripper open, white: closed) whose size grows
with its height. The expert is a proportional controller with clipped delta actions, so the action
at every step is a simple function of what the agentview image shows (where the named block or the
receptacle is, where the arm is) and of the proprio (arm position, gripper):

    reach the block at Z_HIGH -> descend -> close (2 steps) -> lift -> carry over the receptacle
    -> lower -> open (2 steps) -> rise -> hold still for 2 steps (no-ops [0,0,0,0,0,0,-1]), end

A demo ends after those hold steps or at the step limit, whichever comes first, so demos have
different lengths like the real ones.

Coordinates: x to the right, y away from the viewer (up in the upright image), z up, metres.
Actions follow LIBERO: ±1 = ±5 cm per step for position, rotation unused (0), gripper -1 open /
+1 closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 185),
    "cyan": (40, 200, 210),
}
PLACES = ("plate", "bowl", "tray")
TABLE_HALF = 0.25  # the image spans [-0.25, 0.25] m on x and y
BLOCK_HALF = 0.025  # half side of a block
PLACE_RADIUS = 0.05
Z_HIGH, Z_LOW, Z_PLACE = 0.10, 0.02, 0.05
STEP_M = 0.05  # metres per unit action
ACTION_NOISE = 0.02  # teleoperation-like noise on moving position actions
GRID_STEP = 0.13  # spacing of the layout grid (metres)
JITTER = 0.04  # per-demo displacement of every object around the task layout (metres)
ARM_JITTER = 0.05  # per-demo displacement of the arm's start
TOLERANCE = 0.01  # metres; a motion phase ends inside this distance
HOLD_STEPS = 2  # no-op steps recorded once the task is done
HOLD_PHASE = 8  # the expert's last phase: hold still
GRASP_REACH = BLOCK_HALF  # the fingers close over the block within this xy offset (max-norm)
GRASP_HEIGHT = 0.035  # ... and with the gripper at most this far above the block's base
WORKSPACE_LOW = np.array([-TABLE_HALF, -TABLE_HALF, Z_LOW])  # the arm cannot leave this box
WORKSPACE_HIGH = np.array([TABLE_HALF, TABLE_HALF, 0.2])


@dataclass
class Scene:
    """One demo's initial layout. Positions are (x, y) in metres."""

    target: int  # index of the named block in `blocks`
    blocks: list[tuple[str, np.ndarray]]  # (colour, xy)
    place: str
    place_xy: np.ndarray
    arm_start: np.ndarray  # xyz
    tint: np.ndarray  # per-demo table colour offset (RGB), for a little visual variety


def sample_layout(rng: np.random.Generator, colour: str, place: str, n_blocks: int = 3) -> Scene:
    """A task's base layout: the named block, distractors and receptacle on distinct grid cells.

    Like LIBERO, a task keeps its layout across demos and each demo perturbs it (`jitter_scene`),
    so the instruction says roughly where to go and the image says exactly where. A 3 x 3 grid
    with GRID_STEP spacing keeps objects apart however they are jittered.
    """
    others = [c for c in COLOURS if c != colour]
    names = [colour, *rng.choice(others, size=n_blocks - 1, replace=False).tolist()]
    cells = rng.choice(9, size=n_blocks + 1, replace=False)
    points = [np.array([(c % 3 - 1) * GRID_STEP, (c // 3 - 1) * GRID_STEP]) for c in cells]
    arm = np.array([0.0, 0.0, Z_HIGH])
    return Scene(0, list(zip(names, points[:n_blocks])), place, points[-1], arm, np.zeros(3))


def jitter_scene(base: Scene, rng: np.random.Generator) -> Scene:
    """One demo's scene: every object moved by up to JITTER, the arm start by up to ARM_JITTER."""

    def move(xy: np.ndarray) -> np.ndarray:
        return xy + rng.uniform(-JITTER, JITTER, size=2)

    blocks = [(colour, move(xy)) for colour, xy in base.blocks]
    arm = base.arm_start + np.array([*rng.uniform(-ARM_JITTER, ARM_JITTER, size=2), 0.0])
    tint = rng.integers(-12, 13, size=3)
    return Scene(base.target, blocks, base.place, move(base.place_xy), arm, tint)


@dataclass
class WorldState:
    """What changes during an episode (the Scene is what does not)."""

    pos: np.ndarray  # arm xyz
    grip: float  # 0 open .. 1 closed
    block: np.ndarray  # the named block's xyz (z = 0: on the table or the receptacle)
    holding: bool  # the named block is in the closed gripper


def initial_state(scene: Scene) -> WorldState:
    """The arm at its start, gripper open, the named block on the table."""
    block = np.array([*scene.blocks[scene.target][1], 0.0])
    return WorldState(scene.arm_start.astype(np.float64).copy(), 0.0, block, False)


def apply_action(state: WorldState, action: np.ndarray) -> WorldState:
    """One control step, the world's only physics (the recorder and the env both call it).

    LIBERO's action meaning: action[:3] clipped to [-1, 1] moves the arm by STEP_M per unit (held
    inside the workspace), rotation is ignored, the gripper closes by half a stroke per step when
    action[6] > 0 and opens otherwise. A grasp succeeds only when the closing stroke completes
    with the fingers around the block (GRASP_REACH, GRASP_HEIGHT); opening drops the block.
    """
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    pos = np.clip(state.pos + a[:3] * STEP_M, WORKSPACE_LOW, WORKSPACE_HIGH)
    grip = float(np.clip(state.grip + (0.5 if a[6] > 0 else -0.5), 0.0, 1.0))
    holding = state.holding and grip == 1.0
    if not state.holding and grip == 1.0 and state.grip < 1.0:
        reach = np.abs(pos[:2] - state.block[:2]).max() <= GRASP_REACH
        holding = bool(reach and pos[2] - state.block[2] <= GRASP_HEIGHT)
    block = pos - np.array([0.0, 0.0, 0.01]) if holding else state.block.copy()
    if not holding:
        block[2] = 0.0  # released (or never held): it rests below the gripper
    return WorldState(pos, grip, block, holding)


def task_done(scene: Scene, state: WorldState) -> bool:
    """The goal (On block receptacle): the named block, released, rests on the receptacle."""
    on = np.hypot(*(state.block[:2] - scene.place_xy)) < PLACE_RADIUS
    return bool(on and not state.holding and state.block[2] == 0.0)


class ScriptedExpert:
    """The demonstrator: a phase machine over the world state (module docstring).

    Each phase ends when its position goal is within TOLERANCE, or after two gripper steps; with
    an rng, teleoperation-like noise is added to real motions (holds stay exact no-ops).
    """

    def __init__(self, scene: Scene, rng: np.random.Generator | None = None) -> None:
        self.scene, self.rng = scene, rng
        self.phase, self.wait = 0, 0

    @property
    def finished(self) -> bool:
        """Done and held still for HOLD_STEPS steps: a demo ends here."""
        return self.phase == HOLD_PHASE and self.wait >= HOLD_STEPS

    def act(self, state: WorldState) -> np.ndarray:
        """The action [7] for `state` (advances the phase first when its goal is reached)."""
        goal, gripper_cmd = _phase_goal(self.phase, state.pos, state.block, self.scene.place_xy)
        if goal is not None and np.linalg.norm(goal - state.pos) < TOLERANCE:
            self.phase += 1
        elif goal is None and self.phase < HOLD_PHASE and self.wait == 2:
            self.phase, self.wait = self.phase + 1, 0
        goal, gripper_cmd = _phase_goal(self.phase, state.pos, state.block, self.scene.place_xy)
        action = np.zeros(7)
        action[6] = gripper_cmd
        if goal is None:  # gripper phases and the final hold
            self.wait += 1
            return action
        move = np.clip((goal - state.pos) / STEP_M, -1.0, 1.0)
        if self.rng is not None and np.abs(move).max() > 0.2:
            move = np.clip(move + self.rng.normal(0.0, ACTION_NOISE, 3), -1.0, 1.0)
        action[:3] = move
        return action


def run_expert(scene: Scene, steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Roll the scripted expert out until it is done (plus HOLD_STEPS) or for `steps` steps.

    Returns per step (the state BEFORE the action, as LIBERO records it): "pos" [T, 3],
    "grip" [T] (0 open .. 1 closed), "block" [T, 3] (the named block), "actions" [T, 7].
    """
    state, expert = initial_state(scene), ScriptedExpert(scene, rng)
    out: dict[str, list] = {k: [] for k in ("pos", "grip", "block", "actions")}
    for _ in range(steps):
        out["pos"].append(state.pos.copy())
        out["grip"].append(state.grip)
        out["block"].append(state.block.copy())
        action = expert.act(state)
        out["actions"].append(action)
        state = apply_action(state, action)
        if expert.finished:
            break
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _phase_goal(
    phase: int, pos: np.ndarray, block: np.ndarray, place_xy: np.ndarray
) -> tuple[np.ndarray | None, float]:
    """(position goal or None for a gripper/hold phase, gripper command) of each phase."""
    bx, by = block[:2]
    px, py = place_xy
    table = [
        (np.array([bx, by, Z_HIGH]), -1.0),  # 0 reach over the block
        (np.array([bx, by, Z_LOW]), -1.0),  # 1 descend
        (None, 1.0),  # 2 close the gripper
        (np.array([pos[0], pos[1], Z_HIGH]), 1.0),  # 3 lift
        (np.array([px, py, Z_HIGH]), 1.0),  # 4 carry over the receptacle
        (np.array([px, py, Z_PLACE]), 1.0),  # 5 lower
        (None, -1.0),  # 6 open
        (np.array([pos[0], pos[1], Z_HIGH]), -1.0),  # 7 rise
    ]
    return table[phase] if phase < len(table) else (None, -1.0)  # 8 hold still


# ------------------------------------------------------------------------------------ render


def _to_pixels(xy: np.ndarray, size: int) -> tuple[float, float]:
    """(row, col) of a table point in the UPRIGHT image (y up)."""
    col = (xy[0] + TABLE_HALF) / (2 * TABLE_HALF) * size
    row = (TABLE_HALF - xy[1]) / (2 * TABLE_HALF) * size
    return row, col


def render_static(scene: Scene, size: int) -> np.ndarray:
    """The table, the distractor blocks and the receptacle: uint8 [size, size, 3] upright."""
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = np.clip(np.array([150, 120, 90]) + scene.tint, 0, 255)
    rr, cc = np.mgrid[0:size, 0:size] + 0.5
    px = size / (2 * TABLE_HALF)  # pixels per metre
    r, c = _to_pixels(scene.place_xy, size)
    dist = np.hypot(rr - r, cc - c)
    rad = PLACE_RADIUS * px
    if scene.place == "plate":
        img[dist < rad] = (225, 225, 225)
    elif scene.place == "bowl":
        img[dist < rad] = (245, 245, 245)
        img[dist < 0.6 * rad] = (120, 120, 130)
    else:  # tray: a square outline
        inside = (np.abs(rr - r) < rad) & (np.abs(cc - c) < rad)
        img[inside] = (90, 60, 40)
        img[inside & (np.abs(rr - r) < 0.7 * rad) & (np.abs(cc - c) < 0.7 * rad)] = (200, 170, 120)
    for i, (colour, xy) in enumerate(scene.blocks):
        if i != scene.target:
            draw_block(img, xy, colour, size)
    return img


def draw_block(img: np.ndarray, xy: np.ndarray, colour: str, size: int) -> None:
    """Paint a square block centred on table point xy, in place."""
    r, c = _to_pixels(xy, size)
    half = BLOCK_HALF * size / (2 * TABLE_HALF)
    r0, r1 = int(round(r - half)), int(round(r + half))
    c0, c1 = int(round(c - half)), int(round(c + half))
    img[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = COLOURS[colour]


def render_agentview(
    static: np.ndarray, scene: Scene, pos: np.ndarray, grip: float, block: np.ndarray
) -> np.ndarray:
    """One upright third-person frame: static scene + the named block + the arm ring."""
    size = static.shape[0]
    img = static.copy()
    draw_block(img, block[:2], scene.blocks[scene.target][0], size)
    rr, cc = np.mgrid[0:size, 0:size] + 0.5
    r, c = _to_pixels(pos[:2], size)
    dist = np.hypot(rr - r, cc - c)
    outer = (0.018 + 0.2 * pos[2]) * size / (2 * TABLE_HALF)  # higher arm = bigger ring
    ring = (dist < outer) & (dist > 0.55 * outer)
    img[ring] = (245, 245, 245) if grip > 0.5 else (35, 35, 35)
    return img


def render_wrist(frame: np.ndarray, pos: np.ndarray, window: float = 0.2) -> np.ndarray:
    """The wrist camera: a nearest-neighbour zoom of the agentview frame around the arm."""
    size = frame.shape[0]
    r, c = _to_pixels(pos[:2], size)
    span = window / (2 * TABLE_HALF) * size
    offsets = (np.arange(size) + 0.5) / size - 0.5
    rows = np.floor(r + offsets * span).astype(np.int64)
    cols = np.floor(c + offsets * span).astype(np.int64)
    out = frame[np.clip(rows, 0, size - 1)][:, np.clip(cols, 0, size - 1)]
    outside = ((rows < 0) | (rows >= size))[:, None] | ((cols < 0) | (cols >= size))[None, :]
    out[outside] = (60, 60, 60)  # the floor beyond the table
    return out
