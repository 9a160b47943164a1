"""Numerical check of this VGGT against a reference fixture made with the official code.

    python -m atlas.models.vggt.verify tests/fixtures/tiny_reference.pt

Builds the model from the fixture's `config`, loads its `state_dict` strictly, runs every
`images*` input, compares every entry of the matching `outputs*` and of `camera_utils`, and
prints ONE JSON line with the max abs difference per key. Exit status: 0 when every difference
is <= 1e-4, 1 otherwise, 2 when the fixture cannot be read or its config is not supported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atlas.models.vggt.fixture import (
    FixtureConfigError,
    camera_utils_outputs,
    config_from_fixture,
    model_outputs,
)
from atlas.models.vggt.loading import WeightsError, brief_error, load_vggt_state_dict
from atlas.models.vggt.model import VGGT

TOLERANCE = 1e-4


class FixtureReadError(RuntimeError):
    """The fixture file is missing, not a torch file, or lacks required entries."""


def max_abs_diff(ours: Tensor | None, ref: Tensor) -> float:
    """max |ours - ref| over finite entries; inf on a shape mismatch, a missing value or where
    non-finite entries (inf, nan) of the two do not coincide."""
    if ours is None or tuple(ours.shape) != tuple(ref.shape):
        return float("inf")
    a, b = ours.detach().double().cpu(), ref.detach().double().cpu()
    finite = torch.isfinite(a) & torch.isfinite(b)
    same_nonfinite = (a == b) | (torch.isnan(a) & torch.isnan(b))
    if not bool((finite | same_nonfinite).all()):
        return float("inf")
    return float((a - b)[finite].abs().max()) if bool(finite.any()) else 0.0


def read_fixture(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) the fixture and check its required entries."""
    path = Path(path)
    if not path.is_file():
        raise FixtureReadError(f"fixture not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FixtureReadError(f"cannot read fixture {path}: {brief_error(exc)}") from exc
    if not isinstance(blob, dict) or not {"config", "state_dict"} <= blob.keys():
        raise FixtureReadError(f"{path} is not a VGGT fixture (needs 'config' and 'state_dict')")
    if not any(k.startswith("images") and "outputs" + k[6:] in blob for k in blob):
        raise FixtureReadError(f"{path} has no images*/outputs* pair to compare")
    return blob


def compare_fixture(blob: dict[str, Any], source: str = "<fixture>") -> dict[str, float]:
    """Build, load and run the model; return {"<group>.<key>": max abs diff} for every entry."""
    config = config_from_fixture(blob["config"])
    torch.manual_seed(0)
    model = VGGT(config)
    load_vggt_state_dict(model, blob["state_dict"], source)
    model.eval()
    diffs: dict[str, float] = {}
    for name in sorted(k for k in blob if k.startswith("images")):
        group = "outputs" + name[len("images") :]
        if group not in blob:
            continue
        ours = model_outputs(model, blob[name].float())
        for key, ref in blob[group].items():
            diffs[f"{group}.{key}"] = max_abs_diff(ours.get(key), torch.as_tensor(ref))
    if "camera_utils" in blob and "outputs" in blob and "depth" in blob["outputs"]:
        cam = blob["camera_utils"]
        ours = camera_utils_outputs(cam, blob["outputs"]["depth"][0])
        for key, ref in cam.items():
            if key not in ("pose_enc", "image_size_hw"):  # inputs, not results
                diffs[f"camera_utils.{key}"] = max_abs_diff(ours.get(key), ref)
    return diffs


def report(path: str, diffs: dict[str, float], error: str | None = None) -> dict[str, Any]:
    """The JSON summary; non-finite differences become null (strict JSON)."""
    failed = [k for k, d in diffs.items() if not d <= TOLERANCE]
    summary: dict[str, Any] = {
        "fixture": path,
        "passed": error is None and bool(diffs) and not failed,
        "tolerance": TOLERANCE,
        "max_abs_diff": {k: (d if d != float("inf") else None) for k, d in diffs.items()},
        "failed": failed,
    }
    if error is not None:
        summary["error"] = error
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", help="path of a reference fixture .pt")
    args = parser.parse_args(argv)
    try:
        blob = read_fixture(args.fixture)
        config_from_fixture(blob["config"])  # fail with exit 2 before any heavy work
    except (FixtureReadError, FixtureConfigError, KeyError, TypeError) as exc:
        print(f"verify: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        summary = report(args.fixture, compare_fixture(blob, args.fixture))
    except WeightsError as exc:  # the fixture's weights do not fit the model built from it
        summary = report(args.fixture, {}, error=str(exc))
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
