"""`atlas data synth | inspect | stats` through the argparse wiring, with exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from atlas.data.cli import add_data_subcommands, main


def test_wiring_into_a_parent_parser() -> None:
    parser = argparse.ArgumentParser(prog="atlas")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_subcommands(sub.add_parser("data"))
    args = parser.parse_args(["data", "stats", "a", "b", "--out", "s.json"])
    assert args.paths == ["a", "b"] and args.out == "s.json" and callable(args.handler)
    assert parser.parse_args(["data", "inspect", "x", "--json"]).json


def test_synth_inspect_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "libero_synth"
    argv = [
        "synth",
        str(out),
        "--tasks",
        "2",
        "--demos",
        "2",
        "--steps",
        "10",
        "--image-size",
        "16",
        "--seed",
        "1",
    ]
    assert main(argv) == 0
    assert len(list(out.glob("*_demo.hdf5"))) == 2
    assert main(argv) == 2  # refuses to overwrite

    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_files"] == 2 and summary["num_demos"] == 4
    first = summary["files"][0]
    assert first["images"] == {"agentview_rgb": [16, 16, 3], "eye_in_hand_rgb": [16, 16, 3]}
    assert first["instruction"].startswith("pick up the") and len(first["action_max"]) == 7
    assert main(["inspect", str(out)]) == 0
    assert "pick up the" in capsys.readouterr().out

    stats_file = tmp_path / "stats.json"
    assert main(["stats", str(out / "*.hdf5"), "--out", str(stats_file)]) == 0
    stats = json.loads(stats_file.read_text())
    assert stats["num_samples"] == summary["num_steps"] and len(stats["proprio"]["q99"]) == 8


def test_bad_data_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err
    (tmp_path / "x_demo.hdf5").write_text("text")
    assert main(["inspect", str(tmp_path)]) == 1
    assert "not an HDF5 file" in capsys.readouterr().err
