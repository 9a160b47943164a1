"""Message -> policy observation: both key conventions, the reset flag, errors naming the key."""

from __future__ import annotations

import numpy as np
import pytest

from atlas.serving.observation import ObservationError, ServingSpec, to_policy_observation

LIBERO = ServingSpec(
    name="run/final",
    cameras=("agentview_rgb", "eye_in_hand_rgb"),
    image_size=56,
    history=2,
    action_horizon=4,
    uses_state=True,
    instruction_source="filename",
)
rng = np.random.default_rng(0)
SCENE = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
WRIST = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
STATE = np.arange(8, dtype=np.float64) / 10


def _atlas(**extra):
    images = {"agentview_rgb": SCENE, "eye_in_hand_rgb": WRIST}
    return {"images": images, "instruction": "open the drawer", "state": STATE, **extra}


def _openpi(**extra):
    return {
        "observation/image": np.ascontiguousarray(SCENE[::-1, ::-1]),  # as openpi's client sends
        "observation/wrist_image": np.ascontiguousarray(WRIST[::-1, ::-1]),
        "observation/state": STATE,
        "prompt": "open the drawer",
        **extra,
    }


def _without(message: dict, key: str) -> dict:
    return {k: v for k, v in message.items() if k != key}


def test_both_conventions_give_the_same_observation() -> None:
    ours, reset = to_policy_observation(_atlas(), LIBERO)
    theirs, _ = to_policy_observation(_openpi(), LIBERO)
    assert not reset
    for obs in (ours, theirs):
        assert obs["instruction"] == "open the drawer"
        assert np.array_equal(obs["images"]["agentview_rgb"], SCENE)
        assert np.array_equal(obs["images"]["eye_in_hand_rgb"], WRIST)
        assert obs["state"].dtype == np.float32 and np.allclose(obs["state"], STATE)


def test_read_only_frames_are_copied_and_reset_is_read() -> None:
    frame = SCENE.copy()
    frame.flags.writeable = False  # decoded messages are read-only views
    images = {"agentview_rgb": frame, "eye_in_hand_rgb": WRIST}
    obs, reset = to_policy_observation(_atlas(reset=True, images=images), LIBERO)
    assert reset and obs["images"]["agentview_rgb"].flags.writeable


def test_state_is_optional_without_proprio() -> None:
    spec = ServingSpec("p", ("agentview_rgb",), 56, 1, 1, False, "filename")
    obs, _ = to_policy_observation({"images": {"agentview_rgb": SCENE}, "instruction": "go"}, spec)
    assert set(obs) == {"images", "instruction"}


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ([1, 2], "expected a map"),
        ({"foo": 1}, "no image keys.*'foo'.*images/agentview_rgb.*observation/image"),
        (_atlas(images={"agentview_rgb": SCENE}), "lacks camera 'eye_in_hand_rgb'"),
        (_atlas(images=[SCENE]), "'images' must map camera names"),
        (_atlas(instruction=None), "lacks 'instruction'"),
        (_atlas(state=np.zeros(7)), "state: expected 8 finite floats, got shape \\(7,\\)"),
        (_atlas(state=np.full(8, np.nan)), "state: expected 8 finite floats"),
        (_atlas(state="high"), "state: expected float \\[8\\]"),
        (_atlas(reset="yes"), "'reset' must be true or false"),
        (_atlas(state=None), "state: expected 8 finite floats"),
        (_openpi(prompt=""), "lacks 'prompt'"),
        (_without(_openpi(), "observation/state"), "lacks 'observation/state'"),
        (
            _without(_openpi(), "observation/wrist_image"),
            "lacks 'observation/wrist_image'.*eye_in_hand_rgb",
        ),
        (
            _openpi(**{"observation/image": SCENE.astype(np.float32)}),
            "observation/image: expected a uint8 \\[h, w, 3\\] image, got float32 \\[16, 12, 3\\]",
        ),
        (
            _atlas(images={"agentview_rgb": SCENE[..., 0], "eye_in_hand_rgb": WRIST}),
            "images/agentview_rgb: expected a uint8",
        ),
    ],
)
def test_bad_messages_name_the_key(message, match: str) -> None:
    with pytest.raises(ObservationError, match=match):
        to_policy_observation(message, LIBERO)


def test_openpi_keys_map_lerobot_camera_names() -> None:
    spec = ServingSpec(
        "p", ("observation.images.image", "observation.images.wrist_image"), 56, 1, 1, True, "x"
    )
    assert spec.openpi_cameras == {
        "observation/image": "observation.images.image",
        "observation/wrist_image": "observation.images.wrist_image",
    }
    libero_publication = ServingSpec(
        "p", ("observation.images.image", "observation.images.image2"), 56, 1, 1, True, "x"
    )
    assert (
        libero_publication.openpi_cameras["observation/wrist_image"] == "observation.images.image2"
    )
    two_scenes = ServingSpec("p", ("left", "right"), 56, 1, 1, True, "x")
    assert not two_scenes.accepts_openpi and two_scenes.metadata()["expected_keys"]["openpi"] == []
    with pytest.raises(ObservationError, match="openpi's two image keys cannot name"):
        to_policy_observation(_openpi(), two_scenes)


def test_metadata() -> None:
    meta = LIBERO.metadata()
    assert meta["action_horizon"] == 4 and meta["action_dim"] == 7 and meta["state_dim"] == 8
    assert meta["cameras"] == ["agentview_rgb", "eye_in_hand_rgb"] and meta["image_size"] == 56
    assert meta["expected_keys"]["openpi"][:2] == [
        "observation/image: uint8 [h, w, 3], rotated 180",
        "observation/wrist_image: uint8 [h, w, 3], rotated 180",
    ]
