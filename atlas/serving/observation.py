"""What a served policy expects in a message, and the conversion to its observation contract.

Two key conventions are accepted (the server tells them apart by their keys):

    AtlasVLA (what `atlas rollout --server` sends; `atlas.eval.libero_env`):
        {"images": {camera: uint8 [h, w, 3]}, "instruction": str, "state": float [8]}
        frames in the simulator's row order, as stored in the LIBERO HDF5 demos

    openpi LIBERO client (openpi's examples/libero/main.py):
        {"observation/image": uint8 [h, w, 3], "observation/wrist_image": uint8 [h, w, 3],
         "observation/state": float [8], "prompt": str}
        frames rotated 180 degrees from the simulator's (that client does `img[::-1, ::-1]`);
        they are turned back here, so both conventions reach the policy identically.

The state is the LIBERO proprio of both: eef position (3) + eef axis-angle (3) + the two gripper
finger positions (2); it is required only by policies trained with `use_proprio`. Either
convention may add "reset": true to clear the connection's frame history first (the start of an
episode; only policies with `data.history > 1` keep frames between calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

STATE_DIM = 8
ACTION_DIM = 7
OPENPI_IMAGE, OPENPI_WRIST = "observation/image", "observation/wrist_image"
OPENPI_STATE, OPENPI_PROMPT = "observation/state", "prompt"
RESET_KEY = "reset"


class ObservationError(ValueError):
    """A message the policy cannot act on; the text names the key and what was expected."""


@dataclass(frozen=True)
class ServingSpec:
    """What the served policy reads, from its own config (see `spec_from_policy`)."""

    name: str
    cameras: tuple[str, ...]
    image_size: int
    history: int
    action_horizon: int
    uses_state: bool
    instruction_source: str
    synthetic: dict[str, Any] | None = None  # the synthetic dataset it learned (its world's size)

    @property
    def openpi_cameras(self) -> dict[str, str]:
        """openpi key -> policy camera: the first wrist camera and the first other one."""
        wrist = [c for c in self.cameras if is_wrist_camera(c)]
        scene = [c for c in self.cameras if not is_wrist_camera(c)]
        pairs = {OPENPI_IMAGE: scene[:1], OPENPI_WRIST: wrist[:1]}
        return {key: cams[0] for key, cams in pairs.items() if cams}

    @property
    def accepts_openpi(self) -> bool:
        """openpi's two image keys can name every camera of this policy."""
        return len(self.openpi_cameras) == len(self.cameras)

    def metadata(self) -> dict[str, Any]:
        """The first message of every connection (openpi: `get_server_metadata()`)."""
        state = [f"state: float [{STATE_DIM}]"] if self.uses_state else []
        atlas_keys = [f"images/{c}: uint8 [h, w, 3]" for c in self.cameras]
        atlas_keys += ["instruction: str", *state]
        openpi_keys: list[str] = []
        if self.accepts_openpi:
            openpi_keys = [f"{k}: uint8 [h, w, 3], rotated 180" for k in self.openpi_cameras]
            openpi_keys += [f"{OPENPI_PROMPT}: str"]
            openpi_keys += [f"{OPENPI_STATE}: float [{STATE_DIM}]"] if self.uses_state else []
        return {
            "policy": "atlas-vla",
            "name": self.name,
            "action_horizon": self.action_horizon,
            "action_dim": ACTION_DIM,
            "cameras": list(self.cameras),
            "image_size": self.image_size,
            "history": self.history,
            "state_dim": STATE_DIM if self.uses_state else 0,
            "instruction_source": self.instruction_source,
            "synthetic": self.synthetic,
            "expected_keys": {"atlas": atlas_keys, "openpi": openpi_keys},
        }


def is_wrist_camera(name: str) -> bool:
    """LIBERO's `eye_in_hand_rgb` and its LeRobot keys (`...wrist_image`, `...image2`), and
    any other camera named like a wrist one."""
    from atlas.data.lerobot_meta import libero_camera

    libero = libero_camera(name)
    if libero is not None:
        return libero == "eye_in_hand_rgb"
    return "wrist" in name or "eye_in_hand" in name


def spec_from_policy(policy: Any, name: str) -> ServingSpec:
    """The ServingSpec of an `AtlasVLAPolicy` (the only place the server reads its config)."""
    cfg = policy.config  # its PolicyConfig
    synthetic = cfg.synthetic
    return ServingSpec(
        name=name,
        cameras=tuple(cfg.cameras),
        image_size=cfg.image_size,
        history=cfg.history,
        action_horizon=cfg.action_head.chunk_size,
        uses_state=cfg.action_head.use_proprio,
        instruction_source=cfg.instruction_source,
        synthetic=None if synthetic is None else dataclasses.asdict(synthetic),
    )


def to_policy_observation(message: Any, spec: ServingSpec) -> tuple[dict[str, Any], bool]:
    """A decoded message -> (observation for `predict_action`, reset flag); ObservationError."""
    if not isinstance(message, Mapping):
        raise ObservationError(f"expected a map of observation keys, got {type(message).__name__}")
    reset = message.get(RESET_KEY, False)
    if not isinstance(reset, bool | np.bool_):
        raise ObservationError(f"{RESET_KEY!r} must be true or false, got {reset!r}")
    if "images" in message:
        images = _atlas_images(message["images"], spec)
        instruction, state_key = _text(message, "instruction"), "state"
    elif OPENPI_IMAGE in message or OPENPI_WRIST in message:
        images = _openpi_images(message, spec)
        instruction, state_key = _text(message, OPENPI_PROMPT), OPENPI_STATE
    else:
        expected = spec.metadata()["expected_keys"]
        raise ObservationError(
            f"no image keys in the observation (got {sorted(map(str, message))}); send "
            f"AtlasVLA keys {expected['atlas']} or openpi keys {expected['openpi']}"
        )
    observation: dict[str, Any] = {"images": images, "instruction": instruction}
    if spec.uses_state:
        observation["state"] = _state(message, state_key)
    return observation, bool(reset)


def _atlas_images(images: Any, spec: ServingSpec) -> dict[str, np.ndarray]:
    if not isinstance(images, Mapping):
        raise ObservationError(f"'images' must map camera names to frames, got {images!r:.80}")
    missing = [c for c in spec.cameras if c not in images]
    if missing:
        raise ObservationError(
            f"'images' lacks camera {missing[0]!r}: this policy reads {list(spec.cameras)}, "
            f"the message has {sorted(map(str, images))}"
        )
    return {c: _frame(images[c], f"images/{c}") for c in spec.cameras}


def _openpi_images(message: Mapping[str, Any], spec: ServingSpec) -> dict[str, np.ndarray]:
    if not spec.accepts_openpi:
        raise ObservationError(
            f"this policy reads cameras {list(spec.cameras)}, which openpi's two image keys "
            f"cannot name; send AtlasVLA keys ('images': {{camera: frame}})"
        )
    images = {}
    for key, camera in spec.openpi_cameras.items():
        if key not in message:
            raise ObservationError(f"observation lacks {key!r} (this policy reads {camera!r})")
        images[camera] = _frame(message[key], key)[::-1, ::-1]  # back to the simulator's order
    return images


def _frame(value: Any, key: str) -> np.ndarray:
    ok = isinstance(value, np.ndarray) and value.dtype == np.uint8
    if not ok or value.ndim != 3 or value.shape[2] != 3 or min(value.shape) == 0:
        got = f"{value.dtype} {list(value.shape)}" if isinstance(value, np.ndarray) else repr(value)
        raise ObservationError(f"{key}: expected a uint8 [h, w, 3] image, got {got:.80}")
    # Decoded arrays are read-only views of the message; torch wants memory it may write.
    return value if value.flags.writeable else value.copy()


def _text(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ObservationError(f"observation lacks {key!r}: the task instruction as a string")
    return value


def _state(message: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in message:
        raise ObservationError(
            f"observation lacks {key!r}: float [{STATE_DIM}] = eef position (3) + eef "
            "axis-angle (3) + gripper finger positions (2); this policy was trained with proprio"
        )
    try:
        state = np.array(message[key], dtype=np.float32)  # a writable copy
    except (TypeError, ValueError) as e:
        got = repr(message[key])[:80]
        raise ObservationError(f"{key}: expected float [{STATE_DIM}], got {got}") from e
    if state.shape != (STATE_DIM,) or not np.isfinite(state).all():
        raise ObservationError(
            f"{key}: expected {STATE_DIM} finite floats, got shape {state.shape}"
        )
    return state
