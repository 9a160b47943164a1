"""`atlas data collect` on bad input: one line on stderr, exit 2, no output folder.

Every case fails before a simulator env is built, so these take seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.cli import main
from atlas.eval import libero_setup

pytestmark = pytest.mark.skipif(
    not libero_setup.simulator_available(), reason="LIBERO simulator not installed"
)


def _collect(out: Path, *extra: str) -> list[str]:
    return ["data", "collect", "--out", str(out), "--demos", "1", "--no-progress", *extra]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--suite", "libero_spatail"], "did you mean 'libero_spatial'"),
        (["--suite", "libero_spatial", "--tasks", "3,12"], "task ids 0-9, got [12]"),
        (["--suite", "libero_spatial", "--tasks", "x"], "bad task list"),
        (["--suite", "libero_object", "--workers", "0"], "--workers >= 1"),
        (["--suite", "libero_spatial", "--assets", "/nonexistent/assets"], "lacks"),
    ],
)
def test_bad_request_is_one_line_exit_2(tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "out"
    assert main(_collect(out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_folder_of_another_suite_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    (out / ".collect").mkdir(parents=True)
    (out / ".collect" / "collection.json").write_text(
        '{"suite": "libero_object", "image_size": 128}'
    )
    before = sorted(p.name for p in out.rglob("*"))
    assert main(_collect(out, "--suite", "libero_spatial")) == 2
    assert "holds a collection of libero_object" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_renderer_that_cannot_start_is_one_line(tmp_path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "MUJOCO_GL": "no-such-backend"}
    cmd = [sys.executable, "-m", "atlas.cli", *_collect(out, "--suite", "libero_spatial")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the LIBERO simulator could not start") and "MUJOCO_GL" in last
    assert "Traceback" not in proc.stderr and not out.exists()
