"""Shared settings of the feature-cache tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's second
    thread waiting for a core makes them many times slower. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _logging_restored(restore_logging: None) -> None:
    """Every test here leaves the root logger as it found it (tests/conftest.py)."""
