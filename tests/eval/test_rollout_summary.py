"""The rollout summary's 95% Wilson intervals and the simulator versions it records."""

from __future__ import annotations

import importlib.metadata

import pytest

from atlas.eval.rollout_results import (
    EpisodeResult,
    format_table,
    stack_versions,
    summarize,
    wilson_interval,
)


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (0, 10, 0.0, 0.2775),  # textbook values (Wilson 1927; Agresti and Coull 1998, table 1)
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (40, 50, 0.6696, 0.8876),
        (50, 50, 0.9287, 1.0),
    ],
)
def test_wilson_interval_known_values(k, n, lo, hi):
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_without_trials_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _episode(task_id: int, trial: int, success: bool) -> EpisodeResult:
    return EpisodeResult("libero_spatial", task_id, "t", "i", trial, 7, success, 10, 1.0)


def test_summary_carries_intervals_and_versions():
    results = [_episode(0, i, i < 8) for i in range(10)] + [_episode(1, i, False) for i in range(5)]
    summary = summarize(results)
    suite = summary["suites"]["libero_spatial"]
    assert suite["tasks"][0]["ci95"] == pytest.approx(list(wilson_interval(8, 10)), abs=1e-4)
    assert suite["ci95"] == pytest.approx(list(wilson_interval(8, 15)), abs=1e-4)
    assert summary["versions"]["torch"] == importlib.metadata.version("torch")
    assert set(summary["versions"]) <= {"mujoco", "robosuite", "hf-libero", "libero", "torch"}
    table = format_table(summary)
    assert "[49, 94]%" in table and f"torch {summary['versions']['torch']}" in table


def test_versions_leave_out_absent_packages():
    assert "torch" in stack_versions()
