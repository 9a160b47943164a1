"""Exports written by earlier versions keep loading and predict the same actions.

`tests/fixtures/policy_export_v1/` was written by `save_pretrained` at commit 080c0dc, when
config.json held the whole run config (AtlasConfig). It is a policy trained from the feature
cache: two cameras, a history of two frames, camera-pose tokens, proprio and chunks of 4; its
random-init VGGT (from `training.seed`) and its MiniLM encoder are rebuilt on load, so only the
trainable modules are in the file. The expected actions were predicted right after the export
(on another machine, hence a tolerance rather than bitwise equality).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from atlas.models.config import PolicyConfig
from atlas.models.policy import AtlasVLAPolicy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXPORT_V1 = FIXTURES / "policy_export_v1"
TOLERANCE = 1e-4  # the two steps below differ by ~1e-2: far above rounding across CPUs


def test_export_v1_loads_and_predicts_the_same_actions() -> None:
    expected = json.loads((FIXTURES / "policy_export_v1_actions.json").read_text())
    with np.load(FIXTURES / "policy_export_v1_observation.npz", allow_pickle=False) as f:
        images = {key[len("image_") :]: f[key] for key in f.files if key.startswith("image_")}
        state = f["state"]
    policy = AtlasVLAPolicy.from_pretrained(EXPORT_V1)
    observation = {"images": images, "instruction": expected["instruction"], "state": state}
    step0 = policy.predict_action(observation)
    # The second call sees a new frame and keeps the first one as its history.
    flipped = {cam: np.ascontiguousarray(image[::-1]) for cam, image in images.items()}
    step1 = policy.predict_action({**observation, "images": flipped})
    want0 = np.asarray(expected["actions_step0"], dtype=np.float32)
    want1 = np.asarray(expected["actions_step1_flipped"], dtype=np.float32)
    assert step0.shape == want0.shape == (4, 7)
    assert np.abs(want0 - want1).max() > 100 * TOLERANCE  # the images matter at this tolerance
    np.testing.assert_allclose(step0, want0, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(step1, want1, atol=TOLERANCE, rtol=0)


def test_exports_hold_the_policy_config_alone(tmp_path: Path) -> None:
    """config.json is the PolicyConfig: nothing of the run (data paths, optimizer, save dir)."""
    old = json.loads((EXPORT_V1 / "config.json").read_text())
    assert {"training", "checkpoint", "data"} <= set(old)  # the fixture is the earlier format
    policy = AtlasVLAPolicy.from_pretrained(EXPORT_V1)
    policy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(PolicyConfig)}
    assert saved["cameras"] == old["data"]["cameras"] and saved["init_seed"] == 7
    assert old["training"]["loss"].items() <= saved["loss"].items()  # (+ options added since)
    again = AtlasVLAPolicy.from_pretrained(tmp_path)
    assert again.config == policy.config
    for key, value in policy.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
