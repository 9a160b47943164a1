"""A tiny exported policy, and `atlas serve` running it on loopback for openpi-client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from atlas.models.testing import export_tiny_policy
from atlas.serving.launch import ServerProcess, served


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_policy(tmp_path_factory.mktemp("tiny_policy") / "final")


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # One thread, as the in-process reference below: the same kernels give the same numbers.
    with served(tiny_export, "--threads", "1", log_dir=tmp_path_factory.mktemp("serve")) as s:
        yield s


@pytest.fixture(scope="module")
def reference(tiny_export: Path):
    """The same export loaded in this process: what the server must answer."""
    from atlas.models.policy import AtlasVLAPolicy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AtlasVLAPolicy.from_pretrained(tiny_export).eval()
    torch.set_num_threads(threads)
